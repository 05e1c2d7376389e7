//! Sending one delivery to its target: HTTP for Alertmanager and webhooks, SMTP for e-mail.
//! Every error comes back in words (never with a secret in it); nothing here panics.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::Tls as SmtpTls;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;

use super::store::Target;
use super::target::{tls_parameters, Email, Kind, Tls};

/// How long one attempt may take before it counts as failed.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP client for every target (one connection pool).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vmdeck/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Sends `payload` to `target`.
pub async fn send(client: &reqwest::Client, target: &Target, payload: &str) -> Result<(), String> {
    let attempt = async {
        match &target.kind {
            Kind::Alertmanager { url } => {
                let url = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
                post(client, &url, target, payload).await
            }
            Kind::Webhook { url } => post(client, url, target, payload).await,
            Kind::Email(email) => mail(email, target, payload).await,
        }
    };
    match tokio::time::timeout(TIMEOUT + Duration::from_secs(1), attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    target: &Target,
    payload: &str,
) -> Result<(), String> {
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(payload.to_string());
    if let Some(token) = &target.secret {
        req = req.bearer_auth(token.expose());
    }
    let resp = req.send().await.map_err(|e| words(&e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    // A little of the answer helps (Alertmanager says what it did not like); bounded.
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().filter(|c| !c.is_control()).take(200).collect();
    Err(if body.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {body}") })
}

/// An error with its causes, in one line.
fn words(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    // lettre says "Connection error: Connection error: …": once is enough.
    let mut parts: Vec<&str> = s.split(": ").collect();
    parts.dedup();
    parts.join(": ").chars().take(500).collect()
}

/// An SMTP error in words, with what to do about a certificate vmdeck does not trust.
fn smtp_words(e: &lettre::transport::smtp::Error, email: &Email) -> String {
    let s = words(e);
    let hint = if s.contains("UnknownIssuer") {
        if email.ca_file.is_some() {
            " (the server's certificate is signed by none of the public CAs nor the ca_file's)"
        } else {
            " (the server's certificate is not signed by a public CA: give its CA in ca_file)"
        }
    } else if s.contains("NotValidForName") {
        " (the server's certificate is not for this smtp_host)"
    } else {
        ""
    };
    format!("{s}{hint}")
}

async fn mail(email: &Email, target: &Target, payload: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(payload).map_err(|e| format!("bad payload: {e}"))?;
    let subject = v.get("subject").and_then(Value::as_str).unwrap_or("vmdeck alert");
    let body = v.get("body").and_then(Value::as_str).unwrap_or_default();
    let from: Mailbox = email.from.parse().map_err(|e| format!("from: {e}"))?;
    let mut builder =
        Message::builder().from(from).subject(subject).header(ContentType::TEXT_PLAIN);
    for to in &email.to {
        builder = builder.to(to.parse().map_err(|e| format!("to: {e}"))?);
    }
    let message = builder.body(body.to_string()).map_err(|e| words(&e))?;
    let host = email.smtp_host.as_str();
    let ca_file = email.ca_file.as_deref();
    // STARTTLS is required (`Tls::Required`: never plaintext when the server does not offer
    // it); the CA file, if any, is read again at every send (it may have been renewed).
    let tls = match email.tls {
        Tls::Starttls => SmtpTls::Required(tls_parameters(host, ca_file)?),
        Tls::Tls => SmtpTls::Wrapper(tls_parameters(host, ca_file)?),
        Tls::None => SmtpTls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(email.smtp_port)
        .tls(tls)
        .timeout(Some(TIMEOUT));
    if !email.username.is_empty() {
        let password = target.secret.as_ref().map(|s| s.expose().to_string()).unwrap_or_default();
        builder = builder.credentials(Credentials::new(email.username.clone(), password));
    }
    builder.build().send(message).await.map(|_| ()).map_err(|e| smtp_words(&e, email))
}
