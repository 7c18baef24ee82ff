{% from '_macros/checks.sql' import end_of_ds with context %}
-- Every post's content and popularity at the end of ds: age, impressions, smoothed click-through of the
-- post, its source and its author. Read by the nightly candidates (for ds) and ranker training (ds + 1).
with items as (
    select *
    from {{ ref('stg_items') }}
    where ds = date '{{ ds }}'
),

recent as (
    select item_id, event_type, ds
    from {{ ref('stg_events') }}
    where ds between date_sub(date '{{ ds }}', interval {{ params.lookback_days - 1 }} day) and date '{{ ds }}'
),

item_stats as (
    select
        item_id,
        countif(
            event_type = 'impression'
            and ds > date_sub(date '{{ ds }}', interval {{ params.short_window_days }} day)
        ) as impressions_short,
        countif(
            event_type = 'click'
            and ds > date_sub(date '{{ ds }}', interval {{ params.short_window_days }} day)
        ) as clicks_short,
        countif(
            event_type in {{ ENGAGEMENT_TYPES | sql_strings }}
            and ds > date_sub(date '{{ ds }}', interval {{ params.short_window_days }} day)
        ) as engagements_short,
        countif(event_type in {{ ENGAGEMENT_TYPES | sql_strings }}) as engagements_lookback,
        countif(event_type = 'impression') as impressions_lookback,
        countif(event_type = 'click') as clicks_lookback
    from recent
    group by item_id
),

with_stats as (
    select
        items.*,
        coalesce(item_stats.impressions_short, 0) as impressions_short,
        coalesce(item_stats.clicks_short, 0) as clicks_short,
        coalesce(item_stats.engagements_short, 0) as engagements_short,
        coalesce(item_stats.engagements_lookback, 0) as engagements_lookback,
        coalesce(item_stats.impressions_lookback, 0) as impressions_lookback,
        coalesce(item_stats.clicks_lookback, 0) as clicks_lookback
    from items
    left join item_stats on items.item_id = item_stats.item_id
),

source_stats as (
    select source, sum(clicks_lookback) as clicks, sum(impressions_lookback) as impressions
    from with_stats
    group by source
),

author_stats as (
    select author, sum(clicks_lookback) as clicks, sum(impressions_lookback) as impressions
    from with_stats
    group by author
)

select
    with_stats.item_id,
    with_stats.title,
    with_stats.summary,
    with_stats.tags,
    with_stats.source,
    with_stats.author,
    with_stats.post_type,
    with_stats.content_type,
    with_stats.language,
    with_stats.url,
    with_stats.created_at,
    with_stats.deleted,
    timestamp_diff({{ end_of_ds() }}, with_stats.created_at, second) / 86400.0 as item_age_days,
    with_stats.impressions_short,
    with_stats.engagements_short,
    with_stats.engagements_lookback,
    (with_stats.clicks_short + 1) / (with_stats.impressions_short + 20) as ctr_short,
    (source_stats.clicks + 1) / (source_stats.impressions + 20) as source_ctr_lookback,
    (author_stats.clicks + 1) / (author_stats.impressions + 20) as author_ctr_lookback,
    date '{{ ds }}' as ds
from with_stats
inner join source_stats on with_stats.source = source_stats.source
inner join author_stats on with_stats.author = author_stats.author
