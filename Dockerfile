# Nightfeed's Airflow image: the official Airflow image (Celery, Postgres and FAB providers included)
# plus the project's pinned stack, the pipelines library, its SQL, the DAGs and the plugin.
ARG AIRFLOW_VERSION=3.3.2
FROM apache/airflow:${AIRFLOW_VERSION}-python3.11

ARG AIRFLOW_VERSION
ENV NIGHTFEED_HOME=/opt/nightfeed \
    PYTHONPATH=/opt/nightfeed \
    TF_USE_LEGACY_KERAS=1

USER airflow
COPY --chown=airflow:0 requirements.txt constraints.txt ${NIGHTFEED_HOME}/
# Pinning apache-airflow keeps pip from moving the image's own Airflow while it resolves our lock.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" \
        -r ${NIGHTFEED_HOME}/requirements.txt -c ${NIGHTFEED_HOME}/constraints.txt

COPY --chown=airflow:0 pipelines/ ${NIGHTFEED_HOME}/pipelines/
COPY --chown=airflow:0 sql/ ${NIGHTFEED_HOME}/sql/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
