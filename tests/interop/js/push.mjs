// A phone's pusher set through matrix-js-sdk as Element's mobile apps set theirs, then a DM: driven by
// tests/interop/test_push_gateway.py, which runs the push gateway and checks what reaches it.
//
//   node tests/interop/js/push.mjs <baseUrl> <gatewayUrl>
//
// Prints one line `@@RESULT@@ {json}` (the users' tokens, the room, the event ids sent, the pushers
// as GET /pushers lists them) and exits 0; on an error the JSON has `error` and the exit status is 1.

import "./setup.mjs";

const sdk = await import("matrix-js-sdk");
const { createClient } = sdk;

const PASSWORD = "interop password 1";
const unique = () => `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

async function newUser(baseUrl, prefix) {
    const anon = createClient({ baseUrl });
    const username = `${prefix}-${unique()}`;
    let session;
    try {
        await anon.registerRequest({ username, password: PASSWORD });
    } catch (e) {
        if (e.httpStatus !== 401 || !e.data || !e.data.session) throw e;
        session = e.data.session;
    }
    const done = await anon.registerRequest({
        username,
        password: PASSWORD,
        initial_device_display_name: "Phone",
        auth: { type: "m.login.dummy", session },
    });
    const client = createClient({
        baseUrl,
        accessToken: done.access_token,
        userId: done.user_id,
        deviceId: done.device_id,
    });
    return { client, token: done.access_token, userId: done.user_id };
}

async function run(baseUrl, gatewayUrl) {
    const alice = await newUser(baseUrl, "alice");
    const bob = await newUser(baseUrl, "bob");
    // what Element Android / Element X send (app id, a pushkey from FCM/APNs, event_id_only)
    await bob.client.setPusher({
        kind: "http",
        app_id: "im.vector.app.android",
        pushkey: `fcm-token-${unique()}`,
        app_display_name: "Element",
        device_display_name: "Bob's phone",
        lang: "en",
        append: false,
        data: { url: gatewayUrl, format: "event_id_only" },
    });
    const pushers = await bob.client.getPushers();
    const room = await alice.client.createRoom({ is_direct: true, invite: [bob.userId], preset: "trusted_private_chat" });
    await bob.client.joinRoom(room.room_id);
    const sent = await alice.client.sendTextMessage(room.room_id, "are you there?");
    return {
        alice: { token: alice.token, user_id: alice.userId },
        bob: { token: bob.token, user_id: bob.userId },
        room_id: room.room_id,
        event_ids: [sent.event_id],
        pushers: pushers.pushers,
    };
}

const [baseUrl, gatewayUrl] = process.argv.slice(2);
let result;
let status = 0;
try {
    result = await run(baseUrl, gatewayUrl);
} catch (e) {
    result = { error: String(e && e.message ? e.message : e), errcode: e && e.errcode, http_status: e && e.httpStatus };
    status = 1;
}
process.stdout.write(`@@RESULT@@ ${JSON.stringify(result)}\n`);
process.exit(status);
