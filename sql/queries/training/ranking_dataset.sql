-- Ranking examples of the training window ending on ds, split in time like the retrieval dataset.
select
    *,
    case
        when ds > date_sub(date '{{ ds }}', interval {{ params.eval_days }} day) then 'eval'
        else 'train'
    end as split
from {{ ref('ranking_examples') }}
where ds between date_sub(date '{{ ds }}', interval {{ params.train_days + params.eval_days - 1 }} day)
    and date '{{ ds }}'
