# One image for the api, the workers, the migrations and the MLflow server.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
COPY alembic.ini ./
COPY examples ./examples
# Workers and the API need only the MLflow client (mlflow-skinny); the MLflow
# server image is built with EXTRAS=server.
ARG EXTRAS=""
RUN pip install ".${EXTRAS:+[$EXTRAS]}"
EXPOSE 8000 5000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", "--limit-request-line", "8190", "api:create_app()"]
