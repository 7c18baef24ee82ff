-- Posts each user has already been shown or engaged with in the lookback window ending on ds: never
-- recommended again.
select distinct user_id, item_id
from {{ ref('stg_events') }}
where ds between date_sub(date '{{ ds }}', interval {{ params.lookback_days - 1 }} day) and date '{{ ds }}'
order by user_id, item_id
