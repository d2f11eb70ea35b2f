/** The server reads its clients with the protocol folder's ByteReader (the client shares it). */
export { ByteReader, ConnectionClosed } from '../protocol/reader.js';
