{% from '_macros/checks.sql' import event_reject_reason with context %}
-- Every raw event that arrived on ds, with the first reason it is unusable (null when it is fine).
with events as (
    select *
    from {{ ref('raw_events') }}
    where ds = date '{{ ds }}'
),

known_users as (
    select distinct user_id
    from {{ ref('raw_users') }}
    where ds <= date '{{ ds }}' and user_id is not null
),

known_items as (
    select distinct item_id
    from {{ ref('raw_items') }}
    where ds <= date '{{ ds }}' and item_id is not null
),

numbered as (
    select
        events.event_id,
        events.user_id,
        events.item_id,
        events.event_type,
        events.event_ts,
        events.position,
        known_users.user_id is not null as user_known,
        known_items.item_id is not null as item_known,
        row_number() over (partition by events.event_id order by events.event_ts, events.user_id) as copy_number
    from events
    left join known_users on events.user_id = known_users.user_id
    left join known_items on events.item_id = known_items.item_id
)

select
    event_id,
    user_id,
    item_id,
    event_type,
    event_ts,
    position,
    {{ event_reject_reason('user_known', 'item_known', 'copy_number') }} as reject_reason,
    date '{{ ds }}' as ds
from numbered
