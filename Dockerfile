# One edge-relay node. Built by docker-compose.yml; runs the same CLI as
# `npm start` (bin/edge-relay, which also sets the allocator's environment:
# docs/performance.md), with the config mounted at /etc/edge-relay/config.json.
# The CLI is bundled here (npm run build: bin/bundle.mjs), so nothing is
# compiled at start; `serve --workers` makes its socket folder in /tmp: with
# a read-only root filesystem, mount a tmpfs there.
# Node 20 reached its end of life on 2026-04-30 (docs/security.md).
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY tsconfig.json ./
COPY schemas ./schemas
COPY src ./src
COPY bin ./bin
RUN node bin/bundle.mjs
USER node
EXPOSE 9400
# The process answers (/$relay/health), not /$relay/ready: ready is 503 while
# NATS is away or the edge drains, and a container restarted for that would
# only drop its connections (the edge serves its own clients meanwhile and
# rejoins NATS when it comes back). Point load balancers at /$relay/ready.
# The image has no curl; node's fetch does. For a config on another port,
# with listen.tls or listen.proxyProtocol, give the container its own check
# (compose: healthcheck.test) or none.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9400/$relay/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["bin/edge-relay"]
CMD ["serve", "--config", "/etc/edge-relay/config.json"]
