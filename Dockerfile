# syntax=docker/dockerfile:1
# linkvault image: compiled JavaScript, production dependencies only, unprivileged user.
#   docker build -t linkvault .
#   docker run -p 3000:3000 -v linkvault-data:/app/data -e NODE_ENV=production ... linkvault
#
# The base image. Pin it by digest for reproducible, reviewable builds (docs/deploy.md, "Pinning
# images"): a tag moves, a digest does not. Both stages below use this one argument, so pinning is
# one edit (or `--build-arg NODE_IMAGE=node:24-bookworm-slim@sha256:<digest>`):
#   docker buildx imagetools inspect node:24-bookworm-slim   # prints the index digest
#   ARG NODE_IMAGE=node:24-bookworm-slim@sha256:<that digest>
# It is a tag here because the digest could not be read where this file was last edited; replace
# it with the digest you have reviewed.
ARG NODE_IMAGE=node:24-bookworm-slim

# ---- native build tools (better-sqlite3 compiles when no prebuilt binary fits) ----
FROM ${NODE_IMAGE} AS build-tools
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./

# ---- compile TypeScript to dist/ ----
FROM build-tools AS build
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# tsc emits only .js; non-TypeScript files under src/ (page templates, assets) are copied alongside.
RUN npm run build \
 && find src -type f ! -name '*.ts' -exec cp --parents {} dist/ \;

# ---- production node_modules (native modules built here, with the tools) ----
FROM build-tools AS prod-deps
RUN npm ci --omit=dev && npm cache clean --force

# ---- runtime ----
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=prod-deps /app/node_modules ./node_modules
COPY package.json ./
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY config ./config
# The data volume holds the SQLite file and a local master key when those are used; it must be
# writable by the unprivileged user and nothing else.
RUN mkdir -p /app/data && chown node:node /app/data && chmod 0700 /app/data
USER node
VOLUME ["/app/data"]
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.LINKVAULT_PORT || 3000) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Exec form: node runs as PID 1 and receives `docker stop`'s SIGTERM itself (linkvault handles it).
CMD ["node", "bin/linkvault.js", "serve"]
