//! `notify.email`: an email filled from case fields, sent over SMTP (or
//! written to a folder for local use), and recorded on the case as a
//! disclosure.
//!
//! **What it sends.** Only what the definition maps into the task's input:
//! the template's `{{name}}` variables are filled from the inputs of the
//! same name (the definition's `input = { ward = "ward", ... }`), nothing
//! else of the case. The recipient is an address (`to`), a contact
//! (`contact`) or every contact of a role (`role`) in the tenant's
//! directory ([`crate::resources::contacts`]).
//!
//! **Who may receive it.** The engine gives the service the marking of
//! what the task's input may carry ([`ServiceContext::marking`]: the task's
//! effective marking, which covers every field its input reads). A
//! recipient is cleared for OFFICIAL unless the directory says more; a
//! message is sent only when every recipient is cleared for that marking,
//! else the attempt fails permanently (an incident) and nothing is sent.
//!
//! **What is recorded.** Every message sent is a `DisclosureRecorded`
//! event on the case (recipient, template and the names of the fields
//! sent, the purpose `why`, the channel, the marking), visible on the
//! timeline to readers cleared for its marking. The values themselves are
//! not copied into the log again.
//!
//! **At least once.** A crash between sending and recording sends again;
//! every attempt of one invocation carries the same `Message-ID`
//! (derived from the idempotency key), so a mail system can drop the
//! duplicate.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::Digest;

use crate::case::DisclosureRecord;
use crate::definition::FieldType;
use crate::log::TenantId;
use crate::resources::contacts::Directory;
use crate::resources::{ParsedCache, ResourceKind};
use crate::security::Classification;

use super::super::service::{
    BusinessService, ServiceContext, ServiceContract, ServiceError, ServiceValues,
};
use super::{one_text_of, resource_error, text_input};

/// The service's name.
pub const NAME: &str = "notify.email";

/// The contact directory a tenant's `contact` and `role` recipients are
/// looked up in.
pub const DIRECTORY: &str = "directory";

/// Most recipients of one message.
pub const MAX_RECIPIENTS: usize = 50;

/// Longest filled subject plus body, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// An email address, if `s` is one.
pub fn parse_address(s: &str) -> Option<lettre::Address> {
    s.parse().ok()
}

/// Where a tenant's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailSink {
    /// An SMTP relay, without TLS (a relay on the same host or network):
    /// host and port.
    Smtp {
        /// The relay's host name or address.
        host: String,
        /// Its port (25, 587, or a test server's).
        port: u16,
    },
    /// A folder: each message is written as an `.eml` file (local use).
    Folder(PathBuf),
}

/// A message template: `{{name}}` is replaced by the input `name`;
/// `{{case_id}}` by the case's id unless the input gives one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
}

impl Template {
    /// A template.
    pub fn new(subject: impl Into<String>, body: impl Into<String>) -> Self {
        Template {
            subject: subject.into(),
            body: body.into(),
        }
    }

    /// The variables it uses, in order of first use.
    pub fn variables(&self) -> Result<Vec<String>, ServiceError> {
        let mut out = Vec::new();
        for text in [&self.subject, &self.body] {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("{{") {
                let after = &rest[start + 2..];
                let end = after
                    .find("}}")
                    .ok_or_else(|| ServiceError::permanent("the template has '{{' without '}}'"))?;
                let name = after[..end].trim().to_string();
                if !out.contains(&name) {
                    out.push(name);
                }
                rest = &after[end + 2..];
            }
        }
        Ok(out)
    }

    /// Its variables, and the values to fill them from: `input`, with
    /// `case_id` (the case's id unless the input gives one). A variable
    /// that is one of the service's own inputs (`reserved`) or that the
    /// input does not give is a permanent error naming template `name`.
    pub(crate) fn values_for(
        &self,
        name: &str,
        ctx: &ServiceContext,
        input: &ServiceValues,
        reserved: &[&str],
    ) -> Result<(Vec<String>, ServiceValues), ServiceError> {
        let variables = self.variables()?;
        let mut values = input.clone();
        values
            .entry("case_id".to_string())
            .or_insert_with(|| ctx.case_id.clone().into());
        if let Some(missing) = variables
            .iter()
            .find(|v| reserved.contains(&v.as_str()) || !values.contains_key(v.as_str()))
        {
            return Err(ServiceError::permanent(format!(
                "template '{name}' uses '{{{{{missing}}}}}', which the task's input does not give"
            )));
        }
        Ok((variables, values))
    }

    /// `text` with every `{{name}}` replaced by its value (control
    /// characters made spaces when `one_line`).
    pub(crate) fn fill(text: &str, values: &ServiceValues, one_line: bool) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else { break };
            let value = values
                .get(after[..end].trim())
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            if one_line {
                out.extend(value.chars().map(|c| if c.is_control() { ' ' } else { c }));
            } else {
                out.push_str(&value);
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out
    }
}

/// One tenant's email settings.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// The sender (`Name <address>` or an address).
    pub from: String,
    /// Where messages go.
    pub sink: EmailSink,
    /// The templates, by name.
    pub templates: BTreeMap<String, Template>,
    /// The highest marking a bare address (`to`, not a contact) may be
    /// sent: OFFICIAL unless set.
    pub address_clearance: Classification,
}

impl EmailConfig {
    /// Settings sending from `from` to `sink`, with no template yet.
    pub fn new(from: impl Into<String>, sink: EmailSink) -> Self {
        EmailConfig {
            from: from.into(),
            sink,
            templates: BTreeMap::new(),
            address_clearance: Classification::Official,
        }
    }

    /// These settings with a template.
    pub fn with_template(mut self, name: impl Into<String>, template: Template) -> Self {
        self.templates.insert(name.into(), template);
        self
    }
}

/// Sends email for service tasks: input `template` (text), `why` (text:
/// the purpose, recorded with the disclosure), one of `to` (an address),
/// `contact` (a contact id) or `role` (every contact of that role) in the
/// tenant's directory `directory`, and the template's variables (the
/// contract is open); output `recipients` (integer) and `message_id`
/// (text). Each tenant is configured with [`EmailService::with_tenant`]; a
/// tenant without settings gets a permanent error.
///
/// ```
/// use casebook::orchestration::builtin::{notify::{EmailConfig, Template}, EmailService, EmailSink};
/// use casebook::orchestration::BusinessService;
/// use casebook::log::TenantId;
///
/// let kent = EmailConfig::new("Kent Police <no-reply@kent.police.example>",
///         EmailSink::Smtp { host: "127.0.0.1".into(), port: 25 })
///     .with_template("ack", Template::new("Your report {{crime}}", "Dear {{name}}, ..."));
/// let service = EmailService::new().with_tenant(TenantId::new("kent").unwrap(), kent);
/// assert_eq!(service.name(), "notify.email");
/// ```
#[derive(Debug)]
pub struct EmailService {
    tenants: HashMap<TenantId, EmailConfig>,
    contacts: ParsedCache<Directory>,
    timeout: Duration,
}

impl Default for EmailService {
    fn default() -> Self {
        EmailService::new()
    }
}

struct Recipient {
    /// What the disclosure names.
    label: String,
    mailbox: Mailbox,
    clearance: Classification,
}

impl EmailService {
    /// No tenant configured yet.
    pub fn new() -> Self {
        EmailService {
            tenants: HashMap::new(),
            contacts: ParsedCache::new(ResourceKind::Contacts, Directory::parse),
            timeout: Duration::from_secs(20),
        }
    }

    /// This service with `tenant`'s settings.
    pub fn with_tenant(mut self, tenant: TenantId, config: EmailConfig) -> Self {
        self.tenants.insert(tenant, config);
        self
    }

    async fn recipients(
        &self,
        ctx: &ServiceContext,
        config: &EmailConfig,
        input: &ServiceValues,
    ) -> Result<Vec<Recipient>, ServiceError> {
        let (which, value) = one_text_of(input, &["to", "contact", "role"])?;
        if which == "to" {
            let address = parse_address(value).ok_or_else(|| {
                ServiceError::permanent("'to' is not an email address".to_string())
            })?;
            return Ok(vec![Recipient {
                label: address.to_string(),
                mailbox: Mailbox::new(None, address),
                clearance: config.address_clearance,
            }]);
        }
        let (_, directory) = self
            .contacts
            .get(&ctx.resources, DIRECTORY)
            .await
            .map_err(resource_error)?;
        let contacts: Vec<_> = if which == "contact" {
            let c = directory.get(value).ok_or_else(|| {
                ServiceError::permanent(format!("no contact '{value}' in the directory"))
            })?;
            vec![c]
        } else {
            directory.for_role(value).collect()
        };
        if contacts.is_empty() {
            return Err(ServiceError::permanent(format!(
                "no contact answers for role '{value}'"
            )));
        }
        contacts
            .into_iter()
            .take(MAX_RECIPIENTS)
            .map(|c| {
                let address = c.email.as_deref().and_then(parse_address).ok_or_else(|| {
                    ServiceError::permanent(format!("contact '{}' has no email address", c.id))
                })?;
                Ok(Recipient {
                    label: format!("{} <{address}> (contact {})", c.name, c.id),
                    mailbox: Mailbox::new(Some(c.name.clone()), address),
                    clearance: c.clearance,
                })
            })
            .collect()
    }
}

/// The `Message-ID` of every attempt of one invocation.
fn message_id(idempotency_key: &str) -> String {
    let digest = sha2::Sha256::digest(idempotency_key.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@casebook>")
}

#[async_trait::async_trait]
impl BusinessService for EmailService {
    fn name(&self) -> &str {
        NAME
    }

    fn contract(&self) -> ServiceContract {
        ServiceContract::new()
            .input("template", FieldType::Text, true)
            .input("why", FieldType::Text, true)
            .input("to", FieldType::Text, false)
            .input("contact", FieldType::Text, false)
            .input("role", FieldType::Text, false)
            .output("recipients", FieldType::Integer)
            .output("message_id", FieldType::Text)
            .open()
    }

    async fn invoke(
        &self,
        ctx: &ServiceContext,
        input: ServiceValues,
    ) -> Result<ServiceValues, ServiceError> {
        let config = self.tenants.get(&ctx.tenant).ok_or_else(|| {
            ServiceError::permanent(format!("email is not configured for tenant {}", ctx.tenant))
        })?;
        let template_name = text_input(&input, "template")?;
        let why = text_input(&input, "why")?.trim();
        if why.is_empty() {
            return Err(ServiceError::permanent("'why' must give the purpose"));
        }
        let template = config.templates.get(template_name).ok_or_else(|| {
            ServiceError::permanent(format!("no email template '{template_name}'"))
        })?;
        let (variables, values) = template.values_for(
            template_name,
            ctx,
            &input,
            &["template", "why", "to", "contact", "role"],
        )?;
        let recipients = self.recipients(ctx, config, &input).await?;
        if let Some(r) = recipients.iter().find(|r| r.clearance < ctx.marking) {
            return Err(ServiceError::permanent(format!(
                "not sent: the message may carry {} information and {} is cleared for {} only",
                ctx.marking, r.label, r.clearance
            )));
        }
        let subject = Template::fill(&template.subject, &values, true);
        let body = Template::fill(&template.body, &values, false);
        if subject.len() + body.len() > MAX_MESSAGE_BYTES {
            return Err(ServiceError::permanent(format!(
                "the filled message is over {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| ServiceError::permanent(format!("the sender address is invalid: {e}")))?;
        let id = message_id(&ctx.idempotency_key);
        let mut builder = Message::builder()
            .from(from)
            .subject(subject)
            .message_id(Some(id.clone()))
            .header(ContentType::TEXT_PLAIN);
        for r in &recipients {
            builder = builder.to(r.mailbox.clone());
        }
        let message = builder
            .body(body)
            .map_err(|e| ServiceError::permanent(format!("the message cannot be built: {e}")))?;
        let channel = match &config.sink {
            EmailSink::Smtp { host, port } => {
                let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
                    .port(*port)
                    .timeout(Some(self.timeout))
                    .build();
                mailer.send(message).await.map_err(|e| {
                    if e.is_permanent() {
                        ServiceError::permanent(format!("the mail relay refused it: {e}"))
                    } else {
                        ServiceError::retryable(format!("the mail relay failed: {e}"))
                    }
                })?;
                "email"
            }
            EmailSink::Folder(dir) => {
                let bytes = message.formatted();
                let file = dir.join(format!(
                    "{}-{}.eml",
                    ctx.case_id.replace(['/', '\\'], "_"),
                    ctx.invocation.0
                ));
                tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(file.parent().unwrap_or(&file))?;
                    std::fs::write(&file, bytes)
                })
                .await
                .map_err(|e| ServiceError::retryable(format!("writing the message: {e}")))?
                .map_err(|e| ServiceError::retryable(format!("writing the message: {e}")))?;
                "file"
            }
        };
        let fields = if variables.is_empty() {
            "no case fields".to_string()
        } else {
            format!("fields: {}", variables.join(", "))
        };
        for r in &recipients {
            ctx.disclosures.record(DisclosureRecord {
                recipient: r.label.clone(),
                what: format!("email '{template_name}' ({fields})"),
                why: why.to_string(),
                channel: channel.to_string(),
            });
        }
        Ok([
            (
                "recipients".to_string(),
                serde_json::Value::from(recipients.len() as u64),
            ),
            ("message_id".to_string(), serde_json::Value::from(id)),
        ]
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::ItemKey;
    use crate::resources::TenantResources;
    use serde_json::json;

    fn service(dir: &std::path::Path) -> EmailService {
        EmailService::new().with_tenant(
            TenantId::new("kent").unwrap(),
            EmailConfig::new(
                "Kent Police <no-reply@kent.police.example>",
                EmailSink::Folder(dir.to_path_buf()),
            )
            .with_template(
                "ack",
                Template::new(
                    "Your burglary report ({{ward}})",
                    "We have graded your report {{grade}}.",
                ),
            ),
        )
    }

    fn ctx(tenant: &str, marking: Classification) -> ServiceContext {
        let tenant = TenantId::new(tenant).unwrap();
        let mut ctx = ServiceContext::new(
            tenant.clone(),
            "burglary-1",
            ItemKey::new("acknowledge"),
            TenantResources::none(tenant),
        );
        ctx.marking = marking;
        ctx
    }

    fn input(v: serde_json::Value) -> ServiceValues {
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn a_message_is_filled_written_and_disclosed() {
        let dir = tempfile::tempdir().unwrap();
        let s = service(dir.path());
        let c = ctx("kent", Classification::Official);
        let out = s
            .invoke(
                &c,
                input(
                    json!({"template": "ack", "why": "Victims' Code acknowledgement",
                             "to": "victim@example.org", "ward": "Westgate\r\nBcc: x@y.z",
                             "grade": "priority"}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(out["recipients"], json!(1));
        let text = std::fs::read_to_string(dir.path().join("burglary-1-1.eml")).unwrap();
        assert!(text.contains("To: victim@example.org"), "{text}");
        assert!(
            text.contains("We have graded your report priority."),
            "{text}"
        );
        // A line break in a value cannot add a header.
        assert!(!text.contains("\r\nBcc:"), "{text}");
        let d = c.disclosures.take();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].recipient, "victim@example.org");
        assert_eq!(d[0].what, "email 'ack' (fields: ward, grade)");
        assert_eq!(d[0].channel, "file");
    }

    #[tokio::test]
    async fn bad_input_and_uncleared_recipients_send_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = service(dir.path());
        let ok = json!({"template": "ack", "why": "update", "to": "v@example.org",
                        "ward": "W", "grade": "g"});
        let mut cases = vec![];
        for (key, value, says) in [
            ("template", json!("nope"), "no email template"),
            ("to", json!("not an address"), "not an email address"),
            ("why", json!("  "), "purpose"),
        ] {
            let mut v = ok.clone();
            v[key] = value;
            cases.push((v, says));
        }
        let mut v = ok.clone();
        v.as_object_mut().unwrap().remove("grade");
        cases.push((v, "{{grade}}"));
        let mut v = ok.clone();
        v["role"] = json!("victim_care");
        cases.push((v, "exactly one"));
        for (bad, says) in cases {
            let err = s
                .invoke(&ctx("kent", Classification::Official), input(bad))
                .await
                .unwrap_err();
            assert!(
                !err.is_retryable() && err.to_string().contains(says),
                "{err}"
            );
        }
        let err = s
            .invoke(
                &ctx("kent", Classification::OfficialSensitive),
                input(ok.clone()),
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("cleared for OFFICIAL only"),
            "{err}"
        );
        let err = s
            .invoke(&ctx("essex", Classification::Official), input(ok))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not configured"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
