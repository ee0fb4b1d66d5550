# One edge-relay node. Built by docker-compose.yml; runs the same CLI as
# `npm start`, with the config mounted at /etc/edge-relay/config.json.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY tsconfig.json ./
COPY schemas ./schemas
COPY src ./src
USER node
EXPOSE 9400
ENTRYPOINT ["node", "--import", "tsx", "src/cli/main.ts"]
CMD ["serve", "--config", "/etc/edge-relay/config.json"]
