-- Users to compute candidates for on ds, with everything the user tower, the filters and the ranker need.
select
    user_id,
    language,
    selected_tags,
    blocked_tags,
    blocked_sources,
    history,
    account_age_days,
    activity_lookback,
    activity_short,
    ctr_lookback,
    affinity_tags,
    affinity_weights
from {{ ref('user_features') }}
where ds = date '{{ ds }}'
order by user_id
