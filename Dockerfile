# dts: one image for every role (`dts api`, `dts worker`, `dts serve`, `dts scheduler`, the client
# commands); the command is the container's arguments. Used by docker-compose.yml.
#
#   docker build -t dts .
#   docker run --rm dts --help
#
# Written and reviewed by reading: Docker is not available on the machines dts is developed on, so
# this file is not built by CI. See docs/deployment.md.

# --- build: install with the lock file, compile the TypeScript, then drop the dev dependencies ---
FROM node:20-bookworm-slim AS build
# better-sqlite3 and ssh2's optional crypto build from source when no prebuilt binary fits.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/dts
COPY package.json package-lock.json .npmrc tsconfig.json tsconfig.base.json ./
COPY schemas schemas
COPY packages packages
COPY apps apps
# `npm ci` runs the `prepare` script (tsc -b), which needs the dev dependencies; prune them after.
RUN npm ci --no-audit --no-fund \
 && npm prune --omit=dev --no-audit --no-fund

# --- run ---
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    DTS_DATA=/var/lib/dts \
    DTS_API_HOST=0.0.0.0
WORKDIR /opt/dts
COPY --from=build /opt/dts /opt/dts
# The image's `node` user (uid 1000) runs dts; its data directory is a volume.
# Empty named volumes mounted on these paths start with this ownership (docker-compose.yml):
# /var/lib/dts the data dir, /keys the keyring shared by the API and its workers, /data file roots.
RUN mkdir -p /var/lib/dts /keys /data \
 && chown node:node /var/lib/dts /keys /data \
 && ln -s /opt/dts/apps/cli/bin/dts.js /usr/local/bin/dts
USER node
VOLUME ["/var/lib/dts"]
EXPOSE 8080
# No HEALTHCHECK here: only the API role listens (docker-compose.yml checks its /readyz).
ENTRYPOINT ["node", "/opt/dts/apps/cli/bin/dts.js"]
CMD ["--help"]
