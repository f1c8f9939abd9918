/** Public face of src/web/http: an HTTP/1.1 client over any ByteStream (TLS over the relay in browsers). */
export { createHttpClient, type HttpClient, type HttpClientOptions } from "./client.js";
export type { HttpRequestInit } from "./request.js";
