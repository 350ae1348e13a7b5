FROM python:3.11-slim
WORKDIR /app
COPY clients/python clients/python
COPY pyproject.toml README.md ./
COPY server server
COPY gateway gateway
RUN pip install --no-cache-dir ./clients/python . 
EXPOSE 50051 8080
CMD ["agentapi", "serve", "--migrate"]
