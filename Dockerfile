# syntax=docker/dockerfile:1
# Tessera broker image. Build: docker build -t tessera .   Run: see docs/deploy.md ("Container image").

# Build stage: the whole workspace, its dev tools included, only to produce the production bundle.
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY . .
RUN npm ci --no-audit --no-fund \
 && npm run build \
 && bash scripts/bundle.sh /opt/tessera

# Runtime stage: Node and the bundle (broker, built-in plugins, production dependencies), nothing else.
FROM node:24-bookworm-slim
ENV NODE_ENV=production \
    PATH=/opt/tessera/node_modules/.bin:$PATH
# A fixed non-root uid/gid (the Helm chart's default); the image also runs under any other uid.
RUN groupadd --system --gid 10001 tessera \
 && useradd --system --uid 10001 --gid tessera --home-dir /var/lib/tessera --no-create-home --shell /usr/sbin/nologin tessera \
 && mkdir -p /etc/tessera /var/lib/tessera \
 && chown tessera:tessera /var/lib/tessera
COPY --from=build --chown=root:root /opt/tessera /opt/tessera
USER tessera:tessera
# The one writable place: point the config's dataDir here (relative paths resolve against the config file).
WORKDIR /var/lib/tessera
EXPOSE 8080
# Exits 0 only when /healthz answers 200 (liveness: never fails on a dependency).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["tessera", "healthcheck"]
ENTRYPOINT ["tessera"]
CMD ["serve", "--config", "/etc/tessera/config.yaml"]
