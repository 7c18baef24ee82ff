-- The eligible catalog on ds: posts not deleted (and not older than max_item_age_days when that is set
-- above 0), with the content the item tower embeds and the statistics the ranker uses.
select
    item_id,
    title,
    summary,
    tags,
    source,
    author,
    post_type,
    content_type,
    language,
    url,
    created_at,
    item_age_days,
    impressions_short,
    engagements_short,
    engagements_lookback,
    ctr_short,
    source_ctr_lookback,
    author_ctr_lookback
from {{ ref('item_features') }}
where ds = date '{{ ds }}'
    and not deleted
{% if params.max_item_age_days > 0 %}
    and item_age_days <= {{ params.max_item_age_days }}
{% endif %}
order by item_id
