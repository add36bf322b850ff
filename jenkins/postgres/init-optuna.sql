-- Runs once, when the PostgreSQL volume is first created: MLflow uses the
-- database named by POSTGRES_DB (mlflow); Optuna's study storage gets its own.
CREATE DATABASE optuna OWNER mlchain;
