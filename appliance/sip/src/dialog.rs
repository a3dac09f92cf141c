//! UAS dialogs (RFC 3261 §12): the state built from an INVITE and our 2xx, used to recognise in-dialog
//! requests and to build our own (BYE) with the right Request-URI, Route set, tags and CSeq.

use std::fmt;

use crate::message::{Method, NameAddr, Request, Response};

/// Why a dialog could not be formed or a request does not fit it. The peer's fault, answered with
/// [`DialogError::status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error("Missing {0} header")]
    MissingHeader(&'static str),
    #[error("Missing dialog tag")]
    MissingTag,
    #[error("Missing or malformed Contact")]
    MissingContact,
    #[error("CSeq lower than an earlier request")]
    CSeqOutOfOrder,
}

impl DialogError {
    /// 400 for malformed dialog-forming messages; 500 for an out-of-order CSeq (RFC 3261 §12.2.2).
    pub fn status(&self) -> u16 {
        match self {
            DialogError::CSeqOutOfOrder => 500,
            DialogError::MissingHeader(_) | DialogError::MissingTag | DialogError::MissingContact => 400,
        }
    }
}

/// Identifies a dialog: Call-ID, our tag, the peer's tag. `Debug` redacts the Call-ID (PII-adjacent).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: String,
    /// Our tag (To-tag of requests we receive).
    pub local_tag: String,
    /// The peer's tag (From-tag of requests we receive).
    pub remote_tag: String,
}

impl fmt::Debug for DialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DialogId")
            .field("call_id", &"<redacted>")
            .field("local_tag", &self.local_tag)
            .field("remote_tag", &self.remote_tag)
            .finish()
    }
}

impl DialogId {
    /// The dialog a request we received belongs to; `None` when it carries no To-tag (dialog-forming) or
    /// lacks Call-ID/From-tag.
    pub fn from_incoming_request(request: &Request) -> Option<DialogId> {
        let headers = request.headers();
        Some(DialogId {
            call_id: headers.call_id()?.to_owned(),
            local_tag: headers.to()?.tag()?.to_owned(),
            remote_tag: headers.from()?.tag()?.to_owned(),
        })
    }
}

/// A confirmed-or-early UAS dialog. `Debug` shows no URIs.
#[derive(Clone, PartialEq, Eq)]
pub struct Dialog {
    id: DialogId,
    /// Our To header of the 2xx (with our tag): the From of our requests.
    local_party: String,
    /// The peer's From header (with its tag): the To of our requests.
    remote_party: String,
    remote_target: String,
    route_set: Vec<String>,
    local_cseq: u32,
    remote_cseq: u32,
}

impl fmt::Debug for Dialog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialog")
            .field("id", &self.id)
            .field("routes", &self.route_set.len())
            .field("local_cseq", &self.local_cseq)
            .field("remote_cseq", &self.remote_cseq)
            .finish()
    }
}

/// First CSeq number of requests we send in a dialog.
const INITIAL_LOCAL_CSEQ: u32 = 1;

impl Dialog {
    /// The UAS dialog formed by `invite` and our 2xx (or 1xx with To-tag) `response` to it (RFC 3261
    /// §12.1.1): remote target from Contact, route set from Record-Route (in order), tags from both.
    pub fn new_uas(invite: &Request, response: &Response) -> Result<Dialog, DialogError> {
        let headers = invite.headers();
        let call_id = headers.call_id().ok_or(DialogError::MissingHeader("Call-ID"))?;
        let from = headers.get("From").ok_or(DialogError::MissingHeader("From"))?;
        let remote_tag = headers
            .from()
            .and_then(|from| from.tag().map(str::to_owned))
            .ok_or(DialogError::MissingTag)?;
        let local_party = response
            .headers()
            .get("To")
            .ok_or(DialogError::MissingHeader("To"))?;
        let local_tag = response
            .headers()
            .to()
            .and_then(|to| to.tag().map(str::to_owned))
            .ok_or(DialogError::MissingTag)?;
        let remote_target = contact_uri(invite).ok_or(DialogError::MissingContact)?;
        let remote_cseq = headers.cseq().map_or(0, |cseq| cseq.seq);
        Ok(Dialog {
            id: DialogId {
                call_id: call_id.to_owned(),
                local_tag,
                remote_tag,
            },
            local_party: local_party.to_owned(),
            remote_party: from.to_owned(),
            remote_target,
            route_set: headers.record_routes().into_iter().map(str::to_owned).collect(),
            local_cseq: INITIAL_LOCAL_CSEQ.saturating_sub(1),
            remote_cseq,
        })
    }

    /// The dialog's identity.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// Where our in-dialog requests go (the peer's Contact URI).
    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }

    /// The route set (Record-Route of the INVITE, in order).
    pub fn route_set(&self) -> &[String] {
        &self.route_set
    }

    /// Accepts an in-dialog request from the peer: its CSeq must not go backwards (RFC 3261 §12.2.2;
    /// equal numbers are allowed for ACK/CANCEL, which reuse the INVITE's), and a re-INVITE or UPDATE
    /// with a Contact refreshes the remote target.
    pub fn handle_remote_request(&mut self, request: &Request) -> Result<(), DialogError> {
        let cseq = request
            .headers()
            .cseq()
            .ok_or(DialogError::MissingHeader("CSeq"))?;
        let reuses_invite_cseq = matches!(request.method(), Method::Ack | Method::Cancel);
        if cseq.seq < self.remote_cseq || (cseq.seq == self.remote_cseq && !reuses_invite_cseq) {
            return Err(DialogError::CSeqOutOfOrder);
        }
        self.remote_cseq = cseq.seq;
        if matches!(request.method(), Method::Invite | Method::Update)
            && let Some(target) = contact_uri(request)
        {
            self.remote_target = target;
        }
        Ok(())
    }

    /// Builds an in-dialog request (e.g. BYE): Request-URI and Route per the route set (loose or strict
    /// routing), From/To with both tags, Call-ID, the next local CSeq and Max-Forwards. The endpoint adds
    /// Via when it sends it; add Contact or a body with [`Request::with_header`] / [`Request::set_body`].
    pub fn build_request(&mut self, method: Method) -> Request {
        self.local_cseq = self.local_cseq.saturating_add(1);
        let first_route_is_strict = self
            .route_set
            .first()
            .and_then(|route| NameAddr::parse(route))
            .is_some_and(|route| !route.uri.to_ascii_lowercase().contains(";lr"));
        let (uri, routes): (String, Vec<String>) = match self.route_set.split_first() {
            Some((first, rest)) if first_route_is_strict => {
                let first_uri =
                    NameAddr::parse(first).map_or_else(|| self.remote_target.clone(), |route| route.uri);
                let mut routes = rest.to_vec();
                routes.push(format!("<{}>", self.remote_target));
                (first_uri, routes)
            }
            _ => (self.remote_target.clone(), self.route_set.clone()),
        };
        let mut request = Request::new(method.clone(), &uri);
        let headers = request.headers_mut();
        for route in &routes {
            headers.push("Route", route);
        }
        headers.push("Max-Forwards", "70");
        headers.push("From", &self.local_party);
        headers.push("To", &self.remote_party);
        headers.push("Call-ID", &self.id.call_id);
        headers.push("CSeq", &format!("{} {method}", self.local_cseq));
        request
    }
}

fn contact_uri(request: &Request) -> Option<String> {
    request
        .headers()
        .contacts()
        .into_iter()
        .next()
        .map(|contact| contact.uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:srs@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKabc\r\n\
Record-Route: <sip:proxy1.example.net;lr>, <sip:proxy2.example.net;lr>\r\n\
From: <sip:src@198.51.100.7>;tag=src1\r\n\
To: <sip:srs@192.0.2.10>\r\n\
Call-ID: dlg-1\r\n\
CSeq: 10 INVITE\r\n\
Contact: <sip:src@198.51.100.7:5070>;+sip.src\r\n\
Content-Length: 0\r\n\r\n";

    fn dialog() -> Dialog {
        let invite = Request::parse(INVITE.as_bytes()).expect("valid");
        let ok = Response::for_request(&invite, 200, "OK");
        Dialog::new_uas(&invite, &ok).expect("dialog")
    }

    #[test]
    fn bye_uses_remote_target_route_set_and_swapped_tags() {
        let mut dialog = dialog();
        let bye = dialog.build_request(Method::Bye);
        assert_eq!(bye.uri(), "sip:src@198.51.100.7:5070");
        assert_eq!(
            bye.headers().list("Route"),
            vec!["<sip:proxy1.example.net;lr>", "<sip:proxy2.example.net;lr>"]
        );
        assert_eq!(
            bye.headers()
                .to()
                .and_then(|to| to.tag().map(str::to_owned))
                .as_deref(),
            Some("src1")
        );
        assert_eq!(
            bye.headers()
                .from()
                .and_then(|from| from.tag().map(str::to_owned)),
            Some(dialog.id().local_tag.clone())
        );
        assert_eq!(bye.headers().cseq().map(|cseq| cseq.seq), Some(1));
        assert_eq!(
            dialog
                .build_request(Method::Bye)
                .headers()
                .cseq()
                .map(|cseq| cseq.seq),
            Some(2)
        );
    }

    #[test]
    fn in_dialog_requests_are_recognised_and_ordered() {
        let mut dialog = dialog();
        let reinvite = INVITE
            .replace(
                "To: <sip:srs@192.0.2.10>",
                &format!("To: <sip:srs@192.0.2.10>;tag={}", dialog.id().local_tag),
            )
            .replace("CSeq: 10", "CSeq: 11")
            .replace(":5070>", ":5080>");
        let reinvite = Request::parse(reinvite.as_bytes()).expect("valid");
        assert_eq!(
            DialogId::from_incoming_request(&reinvite).as_ref(),
            Some(dialog.id())
        );
        dialog.handle_remote_request(&reinvite).expect("in order");
        assert_eq!(dialog.remote_target(), "sip:src@198.51.100.7:5080");
        assert_eq!(
            dialog.handle_remote_request(&reinvite),
            Err(DialogError::CSeqOutOfOrder)
        );
    }

    #[test]
    fn strict_route_goes_into_the_request_uri() {
        let invite = INVITE.replace("<sip:proxy1.example.net;lr>, ", "<sip:strict.example.net>, ");
        let invite = Request::parse(invite.as_bytes()).expect("valid");
        let mut dialog =
            Dialog::new_uas(&invite, &Response::for_request(&invite, 200, "OK")).expect("dialog");
        let bye = dialog.build_request(Method::Bye);
        assert_eq!(bye.uri(), "sip:strict.example.net");
        assert_eq!(
            bye.headers().list("Route"),
            vec!["<sip:proxy2.example.net;lr>", "<sip:src@198.51.100.7:5070>"]
        );
    }

    #[test]
    fn debug_output_has_no_uris() {
        let text = format!("{:?}", dialog());
        assert!(!text.contains("198.51.100.7"));
        assert!(!text.contains("dlg-1"));
    }
}
