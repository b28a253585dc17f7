//! A small but real SMTP receiver for tests: listens on 127.0.0.1 (port 0),
//! speaks enough of RFC 5321 for a client that sends mail (EHLO/HELO, MAIL
//! FROM, RCPT TO, DATA with dot-unstuffing, RSET, NOOP, QUIT) and hands
//! every message it accepts to the test.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One message as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message (headers and body) as sent after `DATA`, with CRLFs.
    pub data: String,
}

/// A running receiver.
pub struct SmtpReceiver {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Messages, in the order they were accepted.
    pub messages: mpsc::UnboundedReceiver<Received>,
}

/// Starts a receiver; it runs until the test's runtime ends.
pub async fn start() -> SmtpReceiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, messages) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(session(socket, tx.clone()));
        }
    });
    SmtpReceiver { port, messages }
}

/// The address inside `<...>` of a `MAIL FROM:` / `RCPT TO:` argument.
fn path(arg: &str) -> Option<String> {
    let start = arg.find('<')?;
    let end = arg[start..].find('>')? + start;
    Some(arg[start + 1..end].to_string())
}

async fn session(socket: TcpStream, tx: mpsc::UnboundedSender<Received>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    if write
        .write_all(b"220 casebook-test ESMTP ready\r\n")
        .await
        .is_err()
    {
        return;
    }
    let (mut from, mut to) = (None::<String>, Vec::<String>::new());
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let upper = command.to_ascii_uppercase();
        let answer = if upper.starts_with("EHLO") {
            "250-casebook-test greets you\r\n250-8BITMIME\r\n250 SMTPUTF8".to_string()
        } else if upper.starts_with("HELO") {
            "250 casebook-test".to_string()
        } else if upper.starts_with("MAIL FROM:") {
            match path(&command[10..]) {
                Some(p) => {
                    from = Some(p);
                    to.clear();
                    "250 OK".to_string()
                }
                None => "501 syntax: MAIL FROM:<address>".to_string(),
            }
        } else if upper.starts_with("RCPT TO:") {
            match (&from, path(&command[8..])) {
                (None, _) => "503 MAIL first".to_string(),
                (Some(_), Some(p)) => {
                    to.push(p);
                    "250 OK".to_string()
                }
                (Some(_), None) => "501 syntax: RCPT TO:<address>".to_string(),
            }
        } else if upper == "DATA" {
            if from.is_none() || to.is_empty() {
                "503 MAIL and RCPT first".to_string()
            } else {
                if write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let mut data = String::new();
                loop {
                    line.clear();
                    match lines.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    // Dot-unstuffing (RFC 5321 4.5.2).
                    let l = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(l);
                }
                let _ = tx.send(Received {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                });
                "250 OK: queued".to_string()
            }
        } else if upper == "RSET" {
            from = None;
            to.clear();
            "250 OK".to_string()
        } else if upper == "NOOP" {
            "250 OK".to_string()
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            "502 command not implemented".to_string()
        };
        if write
            .write_all(format!("{answer}\r\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}
