-- User profiles as of ds, for the digest e-mails.
select
    user_id,
    email,
    signup_ts,
    language,
    selected_tags,
    blocked_tags,
    blocked_sources,
    digest_opt_in,
    digest_frequency,
    digest_weekday,
    timezone
from {{ ref('stg_users') }}
where ds = date '{{ ds }}'
order by user_id
