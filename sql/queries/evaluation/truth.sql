-- What users did after a night ds: every (user, post) engaged with in [ds, ds + window_days) where the
-- user was known and the post live at the end of the day before, and the user had never seen the post
-- before ds (within seen_horizon_days when that is set above 0): the posts a list of that night could find.
with engaged as (
    select distinct user_id, item_id
    from {{ ref('stg_events') }}
    where ds between date '{{ ds }}' and date_add(date '{{ ds }}', interval {{ params.window_days - 1 }} day)
        and event_type in {{ ENGAGEMENT_TYPES | sql_strings }}
),

seen as (
    select distinct user_id, item_id
    from {{ ref('stg_events') }}
    where ds < date '{{ ds }}'
{% if params.seen_horizon_days > 0 %}
        and ds >= date_sub(date '{{ ds }}', interval {{ params.seen_horizon_days }} day)
{% endif %}
),

known_users as (
    select user_id
    from {{ ref('user_features') }}
    where ds = date_sub(date '{{ ds }}', interval 1 day)
),

live_items as (
    select item_id
    from {{ ref('item_features') }}
    where ds = date_sub(date '{{ ds }}', interval 1 day) and not deleted
)

select engaged.user_id, engaged.item_id
from engaged
inner join known_users on engaged.user_id = known_users.user_id
inner join live_items on engaged.item_id = live_items.item_id
left join seen on engaged.user_id = seen.user_id and engaged.item_id = seen.item_id
where seen.user_id is null
order by engaged.user_id, engaged.item_id
