-- The quarantined rows of ds, for export to the lake.
select source_table, record_id, reject_reason, user_id, item_id, ds
from {{ ref('quarantine') }}
where ds = date '{{ ds }}'
order by source_table, reject_reason, record_id
