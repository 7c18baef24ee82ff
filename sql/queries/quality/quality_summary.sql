-- Row counts of ds's raw arrivals per table and reject reason (reason null = usable rows).
with checked as (
    select 'raw_events' as source_table, reject_reason from {{ ref('checked_events') }}
    where ds = date '{{ ds }}'
    union all
    select 'raw_items' as source_table, reject_reason from {{ ref('checked_items') }}
    where ds = date '{{ ds }}'
    union all
    select 'raw_users' as source_table, reject_reason from {{ ref('checked_users') }}
    where ds = date '{{ ds }}'
)

select
    source_table,
    reject_reason,
    count(*) as n_rows
from checked
group by source_table, reject_reason
order by source_table, reject_reason
