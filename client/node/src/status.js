// @ts-check
/**
 * Rich error details: the `google.rpc.Status` that the broker sends in the
 * `grpc-status-details-bin` trailer, and the `google.rpc.RetryInfo` in it.
 *
 * The messages are declared here wire-compatibly (same field numbers and
 * types) rather than loading googleapis' protos: decoding needs nothing more.
 */

import protobuf from 'protobufjs';

const { root } = protobuf.parse(`
  syntax = "proto3";
  package details;
  message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
  message Any { string type_url = 1; bytes value = 2; }
  message RetryInfo { Duration retry_delay = 1; }
  message Duration { int64 seconds = 1; int32 nanos = 2; }
`);
const Status = root.lookupType('details.Status');
const RetryInfo = root.lookupType('details.RetryInfo');
const RETRY_INFO_URL = 'type.googleapis.com/google.rpc.RetryInfo';

/**
 * The details of a failed call's status, as `{ typeUrl, value }` pairs.
 * @param {{ metadata?: import('@grpc/grpc-js').Metadata }} error
 * @returns {{ typeUrl: string, value: Uint8Array }[]}
 */
export function statusDetails(error) {
  const raw = error?.metadata?.get('grpc-status-details-bin')?.[0];
  if (!raw || typeof raw === 'string') return [];
  /** @type {any} */
  const status = Status.toObject(Status.decode(raw), { longs: Number });
  return (status.details ?? []).map((/** @type {any} */ d) => ({ typeUrl: d.typeUrl, value: d.value }));
}

/**
 * Milliseconds to wait before retrying, from the `google.rpc.RetryInfo` of a
 * RESOURCE_EXHAUSTED error; undefined if there is none.
 * @param {{ metadata?: import('@grpc/grpc-js').Metadata }} error
 * @returns {number | undefined}
 */
export function retryAfterMs(error) {
  const detail = statusDetails(error).find((d) => d.typeUrl === RETRY_INFO_URL);
  if (!detail) return undefined;
  /** @type {any} */
  const info = RetryInfo.toObject(RetryInfo.decode(detail.value), { longs: Number, defaults: true });
  const delay = info.retryDelay ?? { seconds: 0, nanos: 0 };
  return delay.seconds * 1000 + delay.nanos / 1e6;
}
