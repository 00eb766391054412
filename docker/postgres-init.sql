-- MLflow keeps its own store beside sweeplab's, in the same PostgreSQL server.
CREATE DATABASE mlflow OWNER sweeplab;
