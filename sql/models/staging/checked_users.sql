{% from '_macros/checks.sql' import user_reject_reason with context %}
-- Every raw user row that arrived on ds, with the first reason it is unusable (null when it is fine).
with users as (
    select
        *,
        row_number() over (partition by user_id order by signup_ts, email) as copy_number
    from {{ ref('raw_users') }}
    where ds = date '{{ ds }}'
)

select
    user_id,
    signup_ts,
    {{ user_reject_reason('copy_number') }} as reject_reason,
    date '{{ ds }}' as ds
from users
