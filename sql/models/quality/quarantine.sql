-- The unusable raw rows that arrived on ds, one row each, with the table they came from and why.
with events as (
    select
        'raw_events' as source_table,
        event_id as record_id,
        reject_reason,
        user_id,
        item_id
    from {{ ref('checked_events') }}
    where ds = date '{{ ds }}' and reject_reason is not null
),

items as (
    select
        'raw_items' as source_table,
        item_id as record_id,
        reject_reason,
        cast(null as string) as user_id,
        item_id
    from {{ ref('checked_items') }}
    where ds = date '{{ ds }}' and reject_reason is not null
),

users as (
    select
        'raw_users' as source_table,
        user_id as record_id,
        reject_reason,
        user_id,
        cast(null as string) as item_id
    from {{ ref('checked_users') }}
    where ds = date '{{ ds }}' and reject_reason is not null
)

select *, date '{{ ds }}' as ds from events
union all
select *, date '{{ ds }}' as ds from items
union all
select *, date '{{ ds }}' as ds from users
