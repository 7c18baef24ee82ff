-- Engagements (user, post, time) of the days_back days ending on ds: the input of the popularity and
-- item-kNN baselines and of the seen-item exclusion in evaluation.
select user_id, item_id, event_type, event_ts, ds
from {{ ref('stg_events') }}
where ds between date_sub(date '{{ ds }}', interval {{ params.days_back - 1 }} day) and date '{{ ds }}'
    and event_type in {{ ENGAGEMENT_TYPES | sql_strings }}
