{% from '_macros/checks.sql' import item_reject_reason with context %}
-- Every raw post row that arrived on ds, with the first reason it is unusable (null when it is fine).
with items as (
    select
        *,
        row_number() over (partition by item_id order by created_at, title) as copy_number
    from {{ ref('raw_items') }}
    where ds = date '{{ ds }}'
)

select
    item_id,
    title,
    created_at,
    {{ item_reject_reason('copy_number') }} as reject_reason,
    date '{{ ds }}' as ds
from items
