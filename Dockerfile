# The project's Airflow image (docker-compose.yaml builds it): the official Airflow 3.3.2 image, the
# runtime requirements only (requirements.txt + constraints.txt; requirements-dev.txt is for dev
# machines and CI) and the logic package `notes_migration` (pyproject.toml, package in include/).
# The python3.11 variant matches constraints.txt.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

WORKDIR /opt/airflow/project
COPY --chown=airflow:0 requirements.txt constraints.txt ./
# apache-airflow==3.3.2 is pinned in requirements.txt, so pip never swaps the image's Airflow
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt

COPY --chown=airflow:0 pyproject.toml ./
COPY --chown=airflow:0 include ./include
RUN pip install --no-cache-dir --no-deps . && python -c "import notes_migration"

COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
WORKDIR /opt/airflow
