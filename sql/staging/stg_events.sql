-- Usable events that arrived on ds: checked, deduplicated, known users and posts only.
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
