-- Every user's engagements with each post in the history_days window ending on ds, counted, with the
-- last one's time: what the collaborative retrievers (item-kNN, ALS) and recent popularity read.
select
    user_id,
    item_id,
    count(*) as n_events,
    max(event_ts) as event_ts
from {{ ref('stg_events') }}
where ds between date_sub(date '{{ ds }}', interval {{ params.history_days - 1 }} day) and date '{{ ds }}'
    and event_type in {{ ENGAGEMENT_TYPES | sql_strings }}
group by user_id, item_id
order by user_id, item_id
