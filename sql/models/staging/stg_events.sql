-- Usable events that arrived on ds: checked, deduplicated, known users and posts only.
-- depends_on: {{ ref('quarantine') }} (built after the quality gate has passed)
select
    event_id,
    user_id,
    item_id,
    event_type,
    event_ts,
    position,
    ds
from {{ ref('checked_events') }}
where ds = date '{{ ds }}' and reject_reason is null
