/**
 * How the Client and the Worker open their channel: TLS, mTLS and the bearer token, in one
 * place, meaning what the Python client's options mean.
 *
 * Over TLS the token rides as call credentials (grpc-js adds the header). grpc-js refuses call
 * credentials on a plaintext channel, so there the `authorization` header is put on each call
 * instead: that is for a server behind a TLS-terminating proxy or a mesh sidecar; anywhere
 * else a plaintext token can be read off the wire.
 */

import * as grpc from "@grpc/grpc-js";
import { CHANNEL_OPTIONS } from "./requests";

/** TLS settings (PEM bytes). */
export interface TlsOptions {
  /** The CA bundle that signed the server's certificate; default the system's roots. */
  rootCertificates?: Buffer;
  /** The client's certificate chain, for a server that requires mTLS (with `privateKey`). */
  certificateChain?: Buffer;
  privateKey?: Buffer;
  /** The name checked against the server's certificate, when the target's host differs. */
  serverName?: string;
}

/** The connection options the Client and the Worker share. */
export interface ConnectionOptions {
  /** TLS: `true` with the system's roots, or the settings. Default plaintext. */
  tls?: TlsOptions | boolean;
  /** A bearer token, for a server with auth on. */
  token?: string;
  /** Fully configured channel credentials instead of `tls` and `token`. */
  credentials?: grpc.ChannelCredentials;
  /** Extra grpc-js channel options (merged over the library's). */
  channelOptions?: grpc.ChannelOptions;
}

/** A grpc-js client and the metadata every call of it starts with. */
export interface Connection {
  client: grpc.Client;
  metadata(): grpc.Metadata;
}

function checkToken(token: string): string {
  const trimmed = token.trim();
  if (!/^[\x21-\x7e]+$/.test(trimmed)) {
    throw new TypeError("token must be non-empty printable ASCII without blanks");
  }
  return trimmed;
}

function tlsCredentials(tls: TlsOptions): grpc.ChannelCredentials {
  if ((tls.certificateChain === undefined) !== (tls.privateKey === undefined)) {
    throw new TypeError("a client certificate needs its private key, and the other way round");
  }
  return grpc.credentials.createSsl(tls.rootCertificates ?? null, tls.privateKey ?? null, tls.certificateChain ?? null);
}

/** Open a channel to `target` as `options` say; `defaults` are channel options the caller adds. */
export function connect(target: string, options: ConnectionOptions, defaults: grpc.ChannelOptions = {}): Connection {
  const token = options.token === undefined ? undefined : checkToken(options.token);
  if (options.credentials !== undefined && (options.tls || token !== undefined)) {
    throw new TypeError("pass tls and token, or credentials configured with them; not both");
  }
  const tls = options.tls === true ? {} : options.tls || undefined;
  const channelOptions: grpc.ChannelOptions = { ...CHANNEL_OPTIONS, ...defaults };
  if (tls?.serverName) {
    channelOptions["grpc.ssl_target_name_override"] = tls.serverName;
  }
  Object.assign(channelOptions, options.channelOptions);

  let credentials = options.credentials ?? grpc.credentials.createInsecure();
  let header: string | undefined;
  if (tls !== undefined) {
    credentials = tlsCredentials(tls);
    if (token !== undefined) {
      const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
        const metadata = new grpc.Metadata();
        metadata.set("authorization", `Bearer ${token}`);
        callback(null, metadata);
      });
      credentials = grpc.credentials.combineChannelCredentials(credentials, bearer);
    }
  } else if (token !== undefined) {
    header = `Bearer ${token}`;
  }
  return {
    client: new grpc.Client(target, credentials, channelOptions),
    metadata: () => {
      const metadata = new grpc.Metadata();
      if (header !== undefined) {
        metadata.set("authorization", header);
      }
      return metadata;
    },
  };
}
