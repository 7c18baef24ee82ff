-- Retrieval examples of the training window ending on ds, split in time: the last eval_days days are
-- the hold-out, everything before them trains.
select
    *,
    case
        when ds > date_sub(date '{{ ds }}', interval {{ params.eval_days }} day) then 'eval'
        else 'train'
    end as split
from {{ ref('retrieval_examples') }}
where ds between date_sub(date '{{ ds }}', interval {{ params.train_days + params.eval_days - 1 }} day)
    and date '{{ ds }}'
