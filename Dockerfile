# One edge-relay node. Built by docker-compose.yml; runs the same CLI as
# `npm start` (bin/edge-relay, which also sets the allocator's environment:
# docs/performance.md), with the config mounted at /etc/edge-relay/config.json.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY tsconfig.json ./
COPY schemas ./schemas
COPY src ./src
COPY bin ./bin
USER node
EXPOSE 9400
ENTRYPOINT ["bin/edge-relay"]
CMD ["serve", "--config", "/etc/edge-relay/config.json"]
