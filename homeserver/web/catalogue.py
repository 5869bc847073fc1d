"""Every string the web pages show, by language (English first). Templates use `t.key`; a missing
translation falls back to English, so a partial catalogue is safe to add."""

from __future__ import annotations

from collections.abc import Mapping

ENGLISH: dict[str, str] = {
    "lang_name": "English",
    "site_title": "Matrix on {server}",
    "invited_by": "{inviter} invited you to chat on {server}.",
    "invited_anon": "You are invited to chat on {server}.",
    "invited_rooms": "You will join:",
    "admin_invite": "This invite makes you an administrator of the server.",
    "note": "Their note:",
    "what_is": "{server} is a Matrix server: chat with friends here and with people on any other Matrix server.",
    "step_app": "1. Get an app",
    "step_app_help": "Install one of these Matrix apps. They all work with this server.",
    "recommended": "Suggested for your device",
    "other_apps": "Other apps",
    "step_account": "2. Create your account",
    "username": "Username",
    "username_help": "Lower-case letters, digits and . _ = - / + only. Your address will be @name:{server}.",
    "password": "Password",
    "password_help": "At least {min} characters; a few unusual words make a strong password.",
    "password_again": "Password again",
    "sign_up": "Create account",
    "or_app": "You can also create the account inside the app: choose {server} as the server and give this "
    "invite code when asked:",
    "qr_title": "Open this page on your phone",
    "qr_help": "Scan the code with your phone's camera to continue there.",
    "error_title": "Your account was not created",
    "err_passwords_differ": "The two passwords are not the same.",
    "err_password_short": "The password must have at least {min} characters.",
    "err_username_taken": "That username is taken. Please choose another one.",
    "err_username_invalid": "That username cannot be used: use lower-case letters, digits and . _ = - / + only.",
    "err_form_expired": "The form expired. Please try again.",
    "err_too_many": "Too many attempts. Please wait a minute and try again.",
    "err_invite_gone": "This invite was used up or withdrawn while you were signing up.",
    "err_generic": "Something went wrong: {message}",
    "done_title": "Welcome, {user_id}!",
    "done_lead": "Your account is ready.",
    "done_open_app": "Open your app and sign in to {server} as {user_id}.",
    "done_server_url": "If the app asks for a homeserver, use this address:",
    "done_deeplinks": "Or open one of these directly:",
    "status_used_title": "This invite has been used up",
    "status_used": "Every use of this invite has been taken. Ask whoever sent it for a new one.",
    "status_expired_title": "This invite has expired",
    "status_expired": "This invite is too old to use. Ask whoever sent it for a new one.",
    "status_revoked_title": "This invite was withdrawn",
    "status_revoked": "Whoever made this invite has withdrawn it. Ask them for a new one.",
    "status_unknown_title": "This invite does not exist",
    "status_unknown": "Check that the link is complete. If it is, ask whoever sent it for a new one.",
    "status_closed_title": "Sign-up is closed",
    "status_closed": "This server does not accept new accounts at the moment.",
    "platform_android": "Android",
    "platform_ios": "iPhone and iPad",
    "platform_desktop": "Computer",
    "platform_web": "In the browser",
    "get_on": "Get it on {store}",
    "sso_confirm_title": "Continue to {host}?",
    "sso_confirm_lead": "You signed in as {user_id}.",
    "sso_confirm_warning": "{host} will get access to your account. Continue only if you were signing in "
    "to an app there just now.",
    "sso_continue": "Continue to {host}",
    "sso_cancel": "If you did not start this, close this page: nothing more happens.",
    "sso_with": "Or sign up with",
    "sso_only": "Sign up with your account at",
    "sso_error_title": "Sign-in did not work",
    "sso_error_state": "This sign-in link was already used, has expired or was opened in another browser. "
    "Go back to your app and start again.",
    "sso_error_denied": "The sign-in was cancelled at the provider.",
    "sso_error_back": "Back to sign-in",
    "sso_error_provider": "The sign-in provider did not answer as expected. Please try again later.",
    "sso_error_no_account": "There is no account on {server} for this sign-in, and this provider does not "
    "create new ones.",
    "sso_error_invite_needed": "New accounts on {server} need an invite. Open the invite link you were sent "
    "and sign up from there.",
    "sso_error_username": "No free username could be found for this account. Ask the server's admin.",
    "uia_title": "Confirm it is you",
    "uia_lead": "An app signed in as {user_id} asks to {action}.",
    "uia_sso_explain": "To allow it, sign in again with the account your Matrix account is linked to:",
    "uia_continue_with": "Continue with {provider}",
    "uia_password_explain": "To allow it, enter your password.",
    "uia_confirm": "Confirm",
    "uia_warning": "If you did not ask for this just now, close this page: nothing will happen. Someone else may "
    "be using your account, so sign out the sessions you do not recognise.",
    "uia_wrong_password": "That password is not right. Please try again.",
    "uia_action_delete_device": "sign out and remove one of your devices",
    "uia_action_delete_devices": "sign out and remove devices from your account",
    "uia_action_deactivate": "deactivate your account, which cannot be undone",
    "uia_action_password": "change your password",
    "uia_action_cross_signing": "replace your cross-signing keys (your identity for encrypted messages)",
    "uia_action_login_token": "sign you in on another device",
    "uia_action_other": "make a change to your account",
    "uia_done_title": "Confirmed",
    "uia_done_lead": "You can close this page and go back to your app: it will finish what it was doing.",
    "uia_error_title": "Nothing was confirmed",
    "sso_error_uia_session": "This confirmation has expired or was already used. Go back to your app and try again.",
    "sso_error_uia_no_provider": "This account cannot be confirmed with single sign-on. Go back to your app and "
    "confirm another way.",
    "sso_error_uia_no_password": "This account has no password. Go back to your app and confirm another way.",
    "sso_error_uia_wrong_user": "You signed in at the provider as someone other than the account that asked for "
    "this, so nothing was confirmed. Go back to your app and try again, signing in as yourself.",
    "sso_error_uia_unsupported": "This step cannot be completed in the browser on {server}. Go back to your app.",
    "sso_error_uia_too_many": "Too many attempts. Please wait a minute and try again.",
    "sso_error_account_bot": "Accounts marked as bots cannot sign in to {server} this way.",
    "sso_error_account_restricted": "Your account at the sign-in provider cannot sign in to {server}: it is "
    "suspended, limited, awaiting approval, or its e-mail address is not confirmed yet.",
    "sso_error_account_young": "Your account at the sign-in provider is too new to sign in to {server}. "
    "Please try again in a few days.",
    # the OAuth 2.0 pages: sign-in, sign-up, consent, device codes, account management
    "oauth_login_title": "Sign in to {server}",
    "oauth_for_client": "to continue to {client}",
    "oauth_username_or_id": "Username or Matrix ID",
    "oauth_sign_in": "Sign in",
    "oauth_no_account": "No account yet?",
    "oauth_create_account": "Create an account",
    "oauth_have_account": "Already have an account?",
    "oauth_sso_with": "Or continue with",
    "oauth_signup_title": "Create your account on {server}",
    "oauth_invite_code": "Invite code",
    "oauth_invite_help": "New accounts on {server} need an invite. Paste the code from your invite link.",
    "oauth_err_login": "Wrong username or password.",
    "oauth_err_invite": "This invite code is not valid, used up or expired.",
    "oauth_err_invite_needed": "Enter the invite code you were sent.",
    "oauth_err_closed": "This server does not accept new accounts at the moment.",
    "oauth_consent_title": "Allow {client} to use your account?",
    "oauth_consent_lead": "{client} ({host}) asks for full access to your account {user_id}: reading and "
    "sending messages, and everything else you can do.",
    "oauth_consent_device": "It will appear as the session {device_id} in your account.",
    "oauth_consent_device_code": "Only allow this if you just started signing in on a device and it shows "
    "the code {user_code}.",
    "oauth_allow": "Allow",
    "oauth_deny": "Cancel",
    "oauth_not_you": "Not {user_id}?",
    "oauth_sign_out": "Sign out",
    "oauth_error_title": "This sign-in link cannot be used",
    "oauth_error_unknown_client": "The app that sent you here is not registered with {server}. Go back to "
    "the app and try again.",
    "oauth_error_bad_redirect": "The app that sent you here asked to be answered at an address it did not "
    "register. For your safety, nothing more happens.",
    "oauth_error_expired": "This sign-in took too long or was already finished. Go back to your app and start again.",
    "oauth_device_title": "Connect a device",
    "oauth_device_lead": "Enter the code your device shows.",
    "oauth_device_code": "Code",
    "oauth_device_continue": "Continue",
    "oauth_device_unknown": "That code is unknown or has expired. Check it on your device.",
    "oauth_device_done_title": "Your device is connected",
    "oauth_device_done": "Go back to your device: it signs in by itself in a few seconds.",
    "oauth_device_denied_title": "Request cancelled",
    "oauth_device_denied": "The device was not allowed to use your account.",
    "account_title": "Your account",
    "account_signed_in_as": "Signed in as {user_id}",
    "account_profile": "Profile",
    "account_display_name": "Display name",
    "account_save": "Save",
    "account_saved": "Saved.",
    "account_sessions": "Sessions",
    "account_sessions_help": "Every app and device signed in to your account.",
    "account_session_unnamed": "Unnamed session",
    "account_last_seen": "Last active {when}",
    "account_view": "Details",
    "account_end": "Sign out this session",
    "account_end_confirm": "Sign out the session {device}? The app on it will need to sign in again.",
    "account_ended": "The session was signed out.",
    "account_no_session": "There is no session {device_id} in your account.",
    "account_device_id": "Session ID",
    "account_created": "Signed in {when}",
    "account_ip": "Last address",
    "account_oauth_client": "App",
    "account_deactivate": "Deactivate account",
    "account_deactivate_help": "Deactivating signs out every session, leaves every room and frees nothing: "
    "your user ID can never be used again. This cannot be undone.",
    "account_deactivate_confirm": "Type your user ID {user_id} to confirm",
    "account_deactivate_wrong": "That is not your user ID.",
    "account_deactivated_title": "Your account is deactivated",
    "account_cross_signing": "Reset your cross-signing identity",
    "account_cross_signing_help": "Only do this if you lost all your signed-in devices and your recovery "
    "key. Other people will see that your identity changed.",
    "account_cross_signing_allow": "Allow the reset for 10 minutes",
    "account_cross_signing_done": "Go back to your app and finish the reset there within 10 minutes.",
}

CATALOGUE: dict[str, dict[str, str]] = {"en": ENGLISH}


class Strings(Mapping[str, str]):
    """The strings for one language, falling back to English; `t.key` and `t["key"]` both work."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in CATALOGUE else "en"
        self._own = CATALOGUE[self.lang]

    def __getitem__(self, key: str) -> str:
        return self._own.get(key) or ENGLISH[key]

    def __getattr__(self, key: str) -> str:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(ENGLISH)

    def __len__(self) -> int:
        return len(ENGLISH)


def best_language(accept_language: str | None) -> str:
    """The first language of an Accept-Language header the catalogue has (RFC 9110 12.5.4; q ignored
    beyond order, which browsers already sort by)."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        for candidate in (tag, tag.split("-")[0]):
            if candidate in CATALOGUE:
                return candidate
    return "en"
