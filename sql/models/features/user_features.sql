{% from '_macros/checks.sql' import end_of_ds with context %}
-- Every user's state at the end of ds: engagement history (the history_days before), activity and
-- click-through (lookback_days), and the tags they engage with most. Read by the nightly candidates (for
-- ds) and by ranker training (for ds + 1).
with users as (
    select *
    from {{ ref('stg_users') }}
    where ds = date '{{ ds }}'
),

items as (
    select item_id, tags
    from {{ ref('stg_items') }}
    where ds = date '{{ ds }}'
),

recent as (
    select user_id, item_id, event_type, event_ts, ds
    from {{ ref('stg_events') }}
    where ds between date_sub(date '{{ ds }}', interval {{ params.lookback_days - 1 }} day) and date '{{ ds }}'
),

engaged_items as (
    select user_id, item_id, max(event_ts) as last_ts
    from recent
    where event_type in {{ ENGAGEMENT_TYPES | sql_strings }}
    group by user_id, item_id
),

history_engagements as (
    select user_id, item_id, max(event_ts) as last_ts
    from {{ ref('stg_events') }}
    where ds between date_sub(date '{{ ds }}', interval {{ params.history_days - 1 }} day) and date '{{ ds }}'
        and event_type in {{ ENGAGEMENT_TYPES | sql_strings }}
    group by user_id, item_id
),

ranked_history as (
    select
        user_id,
        item_id,
        last_ts,
        row_number() over (partition by user_id order by last_ts desc, item_id) as recency_rank
    from history_engagements
),

history as (
    select user_id, array_agg(item_id order by recency_rank) as history
    from ranked_history
    where recency_rank <= {{ params.history_length }}
    group by user_id
),

activity as (
    select
        user_id,
        countif(event_type in {{ ENGAGEMENT_TYPES | sql_strings }}) as activity_lookback,
        countif(
            event_type in {{ ENGAGEMENT_TYPES | sql_strings }}
            and ds > date_sub(date '{{ ds }}', interval {{ params.short_window_days }} day)
        ) as activity_short,
        countif(event_type = 'click') as clicks_lookback,
        countif(event_type = 'impression') as impressions_lookback
    from recent
    group by user_id
),

tag_counts as (
    select engaged_items.user_id, tag, count(*) as n_engaged
    from engaged_items
    inner join items on engaged_items.item_id = items.item_id
    cross join unnest(items.tags) as tag
    group by engaged_items.user_id, tag
),

ranked_tags as (
    select
        user_id,
        tag,
        n_engaged / sum(n_engaged) over (partition by user_id) as weight,
        row_number() over (partition by user_id order by n_engaged desc, tag) as tag_rank
    from tag_counts
),

affinity as (
    select
        user_id,
        array_agg(tag order by tag_rank) as affinity_tags,
        array_agg(weight order by tag_rank) as affinity_weights
    from ranked_tags
    where tag_rank <= {{ params.affinity_tags }}
    group by user_id
)

select
    users.user_id,
    users.language,
    users.selected_tags,
    users.blocked_tags,
    users.blocked_sources,
    coalesce(history.history, array<string>[]) as history,
    timestamp_diff({{ end_of_ds() }}, users.signup_ts, second) / 86400.0 as account_age_days,
    coalesce(activity.activity_lookback, 0) as activity_lookback,
    coalesce(activity.activity_short, 0) as activity_short,
    (coalesce(activity.clicks_lookback, 0) + 1) / (coalesce(activity.impressions_lookback, 0) + 10) as ctr_lookback,
    coalesce(affinity.affinity_tags, array<string>[]) as affinity_tags,
    coalesce(affinity.affinity_weights, array<float64>[]) as affinity_weights,
    date '{{ ds }}' as ds
from users
left join history on users.user_id = history.user_id
left join activity on users.user_id = activity.user_id
left join affinity on users.user_id = affinity.user_id
