{% from '_macros/checks.sql' import item_reject_reason with context %}
-- The catalog as of the end of ds: the latest usable version of every post that arrived up to ds.
-- depends_on: {{ ref('quarantine') }} (built after the quality gate has passed)
with arrivals as (
    select
        *,
        row_number() over (partition by item_id, ds order by created_at, title) as copy_number
    from {{ ref('raw_items') }}
    where ds <= date '{{ ds }}'
),

usable as (
    select *
    from arrivals
    where {{ item_reject_reason('copy_number') }} is null
)

select
    item_id,
    title,
    coalesce(summary, '') as summary,
    coalesce(tags, []) as tags,
    coalesce(source, 'unknown') as source,
    coalesce(author, 'unknown') as author,
    post_type,
    content_type,
    language,
    url,
    created_at,
    coalesce(deleted, false) as deleted,
    date '{{ ds }}' as ds
from usable
qualify row_number() over (partition by item_id order by ds desc, created_at desc) = 1
