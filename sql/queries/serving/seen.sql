-- Posts each user has ever been shown or engaged with up to the end of ds (or within the last
-- seen_horizon_days when that is set above 0): never recommended again.
select distinct user_id, item_id
from {{ ref('stg_events') }}
where ds <= date '{{ ds }}'
{% if params.seen_horizon_days > 0 %}
    and ds > date_sub(date '{{ ds }}', interval {{ params.seen_horizon_days }} day)
{% endif %}
order by user_id, item_id
