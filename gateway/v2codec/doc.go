// Package v2codec decodes and encodes the Open Inference Protocol's V2 REST
// messages: JSON requests, with Triton's binary tensor extension, into a
// pooled typed Request, and responses and metadata from typed results. It
// has no server in it: the gateway reads bodies and writes answers, and
// calls Decode and the Append functions between.
//
// A JSON body is read once: Decode checks it as strictly as Scanner does
// while it walks it, and parses each element of a tensor's "data" straight
// from the body's bytes into the tensor's buffer. In steady state, with
// pooled requests and reused response buffers, nothing here allocates.
//
// A gRPC ModelInferRequest is decoded the same way, without unmarshalling
// it: ParseProto checks the encoded message as proto.Unmarshal checks it
// and notes where its fields lie, and DecodeProto runs the request's
// checks on them and copies the elements from the wire into the tensors.
package v2codec
