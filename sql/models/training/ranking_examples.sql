-- Logged impressions of ds with their graded outcome (0 shown only, 1 click, 2 upvote, 3 bookmark,
-- 4 share) and point-in-time features: user and post features of the day before, post age when shown.
with impressions as (
    select user_id, item_id, min(event_ts) as shown_ts, min(position) as position
    from {{ ref('stg_events') }}
    where ds = date '{{ ds }}' and event_type = 'impression'
    group by user_id, item_id
),

outcomes as (
    select
        user_id,
        item_id,
        max(
            case event_type
                when 'share' then 4
                when 'bookmark' then 3
                when 'upvote' then 2
                when 'click' then 1
                else 0
            end
        ) as label
    from {{ ref('stg_events') }}
    where ds = date '{{ ds }}' and event_type in {{ ENGAGEMENT_TYPES | sql_strings }}
    group by user_id, item_id
),

items as (
    select item_id, tags, source, author, language, created_at
    from {{ ref('stg_items') }}
    where ds = date '{{ ds }}'
),

item_features as (
    select *
    from {{ ref('item_features') }}
    where ds = date_sub(date '{{ ds }}', interval 1 day)
),

user_features as (
    select *
    from {{ ref('user_features') }}
    where ds = date_sub(date '{{ ds }}', interval 1 day)
)

select
    impressions.user_id,
    impressions.item_id,
    impressions.shown_ts,
    impressions.position,
    coalesce(outcomes.label, 0) as label,
    items.tags,
    items.source,
    items.author,
    items.language,
    greatest(timestamp_diff(impressions.shown_ts, items.created_at, second), 0) / 86400.0 as item_age_days,
    coalesce(item_features.impressions_short, 0) as impressions_short,
    coalesce(item_features.engagements_short, 0) as engagements_short,
    coalesce(item_features.engagements_lookback, 0) as engagements_lookback,
    coalesce(item_features.ctr_short, 1 / 20) as ctr_short,
    coalesce(item_features.source_ctr_lookback, 1 / 20) as source_ctr_lookback,
    coalesce(item_features.author_ctr_lookback, 1 / 20) as author_ctr_lookback,
    coalesce(user_features.history, array<string>[]) as history,
    coalesce(user_features.selected_tags, array<string>[]) as selected_tags,
    coalesce(user_features.account_age_days, 0) as account_age_days,
    coalesce(user_features.activity_lookback, 0) as activity_lookback,
    coalesce(user_features.activity_short, 0) as activity_short,
    coalesce(user_features.ctr_lookback, 1 / 10) as ctr_lookback,
    coalesce(user_features.affinity_tags, array<string>[]) as affinity_tags,
    coalesce(user_features.affinity_weights, array<float64>[]) as affinity_weights,
    date '{{ ds }}' as ds
from impressions
inner join items on impressions.item_id = items.item_id
left join outcomes on impressions.user_id = outcomes.user_id and impressions.item_id = outcomes.item_id
left join item_features on impressions.item_id = item_features.item_id
left join user_features on impressions.user_id = user_features.user_id
