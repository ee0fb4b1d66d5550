// The published Web PubSub SDKs as test clients: @azure/web-pubsub-client
// (one client, everything it receives kept in order) and @azure/web-pubsub's
// service client pointed at a relay.
import type { TestContext } from 'node:test';
import { WebPubSubClient, type WebPubSubClientOptions } from '@azure/web-pubsub-client';
import { WebPubSubServiceClient } from '@azure/web-pubsub';
import { cleanupFor } from './cleanup.ts';
import { HUB, HUB_KEY } from './pubsub.ts';
import { until, withTimeout } from './wait.ts';

export const FAST_RETRY = { maxRetries: 0 };
/**
 * The SDK's keep-alive tasks sleep their whole interval even after stop()
 * (AbortableTask ignores its abort signal while in delay()), which keeps a
 * stopped client's process alive up to 40 s. Short intervals bound that; the
 * client's pings every second also exercise the relay's pong.
 */
export const SHORT_KEEPALIVE = { keepAliveIntervalInMs: 1000, keepAliveTimeoutInMs: 6000 };

export async function startClient(
  t: Pick<TestContext, 'after'>,
  url: string | (() => string),
  options: WebPubSubClientOptions = {},
): Promise<{ client: WebPubSubClient; connectionIds: string[]; groupData: any[]; serverData: any[] }> {
  const merged = { ...SHORT_KEEPALIVE, ...options };
  const client =
    typeof url === 'string'
      ? new WebPubSubClient(url, merged)
      : new WebPubSubClient({ getClientAccessUrl: async () => url() }, merged);
  const connectionIds: string[] = [];
  const groupData: any[] = [];
  const serverData: any[] = [];
  client.on('connected', (e) => connectionIds.push(e.connectionId));
  client.on('group-message', (e) => groupData.push(e.message));
  client.on('server-message', (e) => serverData.push(e.message));
  cleanupFor(t).after(() => client.stop());
  await withTimeout(client.start(), 5000, 'client start');
  await until(() => connectionIds.length > 0, 5000, 'connected event');
  return { client, connectionIds, groupData, serverData };
}

/** The service SDK pointed at a relay; `retryOptions` as the SDK takes them (its default retries 503 three times). */
export function serviceClient(relay: { url: string }, retryOptions?: { maxRetries: number }): WebPubSubServiceClient {
  return new WebPubSubServiceClient(`Endpoint=${relay.url};AccessKey=${HUB_KEY};Version=1.0;`, HUB, {
    allowInsecureConnection: true,
    ...(retryOptions ? { retryOptions } : {}),
  });
}
