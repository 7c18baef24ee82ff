{% from '_macros/checks.sql' import user_reject_reason with context %}
-- Users as of the end of ds: the latest usable profile of every user who signed up up to ds.
-- depends_on: {{ ref('quarantine') }} (built after the quality gate has passed)
with arrivals as (
    select
        *,
        row_number() over (partition by user_id, ds order by signup_ts, email) as copy_number
    from {{ ref('raw_users') }}
    where ds <= date '{{ ds }}'
),

usable as (
    select *
    from arrivals
    where {{ user_reject_reason('copy_number') }} is null
)

select
    user_id,
    email,
    signup_ts,
    language,
    coalesce(selected_tags, []) as selected_tags,
    coalesce(blocked_tags, []) as blocked_tags,
    coalesce(blocked_sources, []) as blocked_sources,
    coalesce(digest_opt_in, false) as digest_opt_in,
    digest_frequency,
    digest_weekday,
    timezone,
    date '{{ ds }}' as ds
from usable
qualify row_number() over (partition by user_id order by ds desc, signup_ts desc) = 1
