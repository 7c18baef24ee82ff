-- Point-in-time retrieval examples for ds: one row per user and post first engaged with on ds (within
-- the history_days before), with the user's state as of just before that moment (only events strictly
-- earlier: the history over history_days, the activity over lookback_days) and the post's age then.
with engagements as (
    select user_id, item_id, event_ts, ds
    from {{ ref('stg_events') }}
    where ds between date_sub(date '{{ ds }}', interval {{ params.history_days }} day) and date '{{ ds }}'
        and event_type in {{ ENGAGEMENT_TYPES | sql_strings }}
),

first_engagements as (
    select user_id, item_id, min(event_ts) as event_ts, min(ds) as first_ds
    from engagements
    group by user_id, item_id
),

positives as (
    select user_id, item_id, event_ts
    from first_engagements
    where first_ds = date '{{ ds }}'
),

earlier as (
    select
        positives.user_id,
        positives.item_id,
        positives.event_ts,
        engagements.item_id as earlier_item_id,
        max(engagements.event_ts) as earlier_ts,
        countif(
            engagements.event_ts >= timestamp_sub(positives.event_ts, interval {{ params.lookback_days }} day)
        ) as n_recent
    from positives
    inner join engagements
        on engagements.user_id = positives.user_id
        and engagements.event_ts < positives.event_ts
        and engagements.event_ts >= timestamp_sub(positives.event_ts, interval {{ params.history_days }} day)
        and engagements.item_id != positives.item_id
    group by positives.user_id, positives.item_id, positives.event_ts, engagements.item_id
),

ranked_earlier as (
    select
        *,
        row_number() over (
            partition by user_id, item_id, event_ts order by earlier_ts desc, earlier_item_id
        ) as recency_rank
    from earlier
),

history as (
    select
        user_id,
        item_id,
        event_ts,
        array_agg(earlier_item_id order by recency_rank) as history
    from ranked_earlier
    where recency_rank <= {{ params.history_length }}
    group by user_id, item_id, event_ts
),

activity as (
    select user_id, item_id, event_ts, cast(sum(n_recent) as int64) as activity_lookback
    from earlier
    group by user_id, item_id, event_ts
),

users as (
    select user_id, selected_tags, signup_ts
    from {{ ref('stg_users') }}
    where ds = date '{{ ds }}'
),

items as (
    select *
    from {{ ref('stg_items') }}
    where ds = date '{{ ds }}'
)

select
    positives.user_id,
    positives.event_ts,
    coalesce(history.history, array<string>[]) as history,
    users.selected_tags,
    greatest(timestamp_diff(positives.event_ts, users.signup_ts, second), 0) / 86400.0 as account_age_days,
    coalesce(activity.activity_lookback, 0) as activity_lookback,
    positives.item_id,
    items.title,
    items.summary,
    items.tags,
    items.source,
    items.author,
    items.post_type,
    items.content_type,
    items.language,
    greatest(timestamp_diff(positives.event_ts, items.created_at, second), 0) / 86400.0 as item_age_days,
    date '{{ ds }}' as ds
from positives
inner join users on positives.user_id = users.user_id
inner join items on positives.item_id = items.item_id
left join history
    on positives.user_id = history.user_id
    and positives.item_id = history.item_id
    and positives.event_ts = history.event_ts
left join activity
    on positives.user_id = activity.user_id
    and positives.item_id = activity.item_id
    and positives.event_ts = activity.event_ts
