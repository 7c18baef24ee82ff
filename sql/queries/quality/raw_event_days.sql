-- Raw events per day up to ds: where a history build ending at ds can start (see pipelines/data/plausible.py).
select
    ds,
    count(*) as n_rows
from {{ ref('raw_events') }}
where ds <= date '{{ ds }}'
group by ds
order by ds
