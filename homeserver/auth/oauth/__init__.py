"""The OAuth 2.0 API (spec: client-server-api "OAuth 2.0 API"): server metadata, dynamic client
registration, the authorization code grant with PKCE, refresh and revocation, the device
authorization grant, and the browser side (sign-in, sign-up, consent, account management).

Tokens it issues are the server's ordinary access tokens with a lifetime and the client's name
(Tokens, Requester.oauth_client): every client-server endpoint takes them as it takes any other."""
