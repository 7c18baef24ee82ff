{#- Data-quality rules, one definition used by the quarantine and the staging models alike.
    Each macro renders a `case` giving the first reason a raw row is unusable, or null when it is fine.
    A timestamp after the end of ds (plus the allowed skew) is a future_timestamp; one more than
    max_past_years before ds is out_of_range (an epoch-0 or year-1 default, not a real time). -#}

{%- macro end_of_ds(skew_minutes=0) -%}
timestamp_add(timestamp(date_add(date '{{ ds }}', interval 1 day)), interval {{ skew_minutes }} minute)
{%- endmacro -%}

{%- macro earliest_plausible() -%}
timestamp(date_sub(date '{{ ds }}', interval {{ params.max_past_years }} year))
{%- endmacro -%}

{%- macro event_reject_reason(known_user, known_item, copy_number) -%}
case
    when event_id is null or user_id is null or item_id is null or event_ts is null or event_type is null
        then 'null_key'
    when event_type not in {{ EVENT_TYPES | sql_strings }} or coalesce(position, 0) < 0
        then 'malformed_value'
    when event_ts >= {{ end_of_ds(params.max_future_skew_minutes) }}
        then 'future_timestamp'
    when event_ts < {{ earliest_plausible() }}
        then 'out_of_range'
    when not {{ known_user }}
        then 'unknown_user'
    when not {{ known_item }}
        then 'unknown_item'
    when {{ copy_number }} > 1
        then 'duplicate'
end
{%- endmacro -%}

{%- macro item_reject_reason(copy_number) -%}
case
    when item_id is null or created_at is null
        then 'null_key'
    when title is null or trim(title) = '' or language is null or length(language) != 2
        or post_type not in {{ POST_TYPES | sql_strings }}
        or content_type not in {{ CONTENT_TYPES | sql_strings }}
        then 'malformed_value'
    when created_at >= {{ end_of_ds(params.max_future_skew_minutes) }}
        then 'future_timestamp'
    when created_at < {{ earliest_plausible() }}
        then 'out_of_range'
    when {{ copy_number }} > 1
        then 'duplicate'
end
{%- endmacro -%}

{%- macro user_reject_reason(copy_number) -%}
case
    when user_id is null or signup_ts is null
        then 'null_key'
    when language is null or length(language) != 2
        or digest_frequency not in {{ DIGEST_FREQUENCIES | sql_strings }}
        or digest_weekday not between 0 and 6
        or timezone is null
        then 'malformed_value'
    when signup_ts >= {{ end_of_ds(params.max_future_skew_minutes) }}
        then 'future_timestamp'
    when signup_ts < {{ earliest_plausible() }}
        then 'out_of_range'
    when {{ copy_number }} > 1
        then 'duplicate'
end
{%- endmacro -%}
