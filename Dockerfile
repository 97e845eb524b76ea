# The recsys application image: every role (ingest bridge, stream consumers, feed server, batch)
# runs from it with a different command (docker-compose.yml). Node's version is pinned in
# deploy/local/versions.ts (`node`) and test/unit/compose.test.ts holds this ARG to it.
#
#   docker build -t recsys .                    # runtime: stream and serving roles
#   docker build -t recsys-batch --target batch .   # plus Python for training (LightGBM, ONNX)
ARG NODE_VERSION=20.20.2

# --- build: all dependencies, TypeScript compiled to dist/ ---------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
# .npmrc first: onnxruntime-node-install=skip keeps onnxruntime-node's install script from
# downloading GPU binaries (the CPU ones ship in the package).
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY core core
COPY schemas schemas
COPY store store
COPY stream stream
COPY serving serving
COPY batch batch
COPY bench bench
COPY deploy deploy
COPY test test
RUN npx tsc -p tsconfig.json

# --- prod-deps: production dependencies only ------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS prod-deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# --- runtime: compiled code, production dependencies, files read at run time, non-root ---------
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production \
    RECSYS_HTTP_HOST=0.0.0.0 \
    RECSYS_LAKE_DIR=/data/lake \
    RECSYS_BATCH_DIR=/data/batch \
    RECSYS_MODEL_REGISTRY_URL=file:///data/models
WORKDIR /app
COPY --from=prod-deps /app/node_modules node_modules
COPY package.json ./
# Only what the roles run: deploy/, bench/ and test/ are compiled for type-checking, not shipped.
COPY --from=build /app/dist/core dist/core
COPY --from=build /app/dist/schemas dist/schemas
COPY --from=build /app/dist/store dist/store
COPY --from=build /app/dist/stream dist/stream
COPY --from=build /app/dist/serving dist/serving
COPY --from=build /app/dist/batch dist/batch
# Read at run time: Avro schemas (schemas/subjects.ts), the demo page (serving/server.ts) and the
# batch's Python steps (batch/train.ts, batch/python-env.ts).
COPY schemas/*.avsc schemas/
COPY serving/web serving/web
COPY batch/python batch/python
# The image's `node` user (uid 1000) owns the data directory (compose mounts a named volume there)
# and nothing else.
RUN mkdir -p /data && chown node:node /data
USER node
CMD ["node", "dist/stream/main.js", "ingest"]

# --- batch: the runtime plus the Python environment training needs, built once here ----------
FROM runtime AS batch
USER root
# libgomp1: LightGBM's OpenMP runtime.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv libgomp1 \
 && rm -rf /var/lib/apt/lists/*
ENV RECSYS_PYTHON_VENV=/opt/recsys/venv
# The stamp is what batch/python-env.ts compares (sha256 of requirements.txt), so the batch finds
# the environment ready and does not install again.
RUN python3 -m venv /opt/recsys/venv \
 && /opt/recsys/venv/bin/python -m pip install --quiet --no-cache-dir --upgrade pip \
 && /opt/recsys/venv/bin/python -m pip install --quiet --no-cache-dir --disable-pip-version-check \
      -r batch/python/requirements.txt \
 && sha256sum batch/python/requirements.txt | cut -d' ' -f1 > /opt/recsys/venv/.requirements.sha256
USER node
CMD ["node", "dist/batch/main.js", "--serve", "--schedule"]
