-- The eligible catalog on ds: posts not deleted and not older than max_item_age_days, with the content
-- the item tower embeds and the statistics the ranker uses.
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
    impressions_7d,
    engagements_7d,
    engagements_30d,
    ctr_7d,
    source_ctr_30d,
    author_ctr_30d
from {{ ref('item_features') }}
where ds = date '{{ ds }}'
    and not deleted
    and item_age_days <= {{ params.max_item_age_days }}
order by item_id
