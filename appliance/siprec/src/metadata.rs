//! Recording metadata (RFC 7865, `application/rs-metadata+xml`): parsing every dialect SRCs send into one
//! model, [`RecordingMetadata`], and keeping the per-Recording-Session state across `complete` snapshots and
//! `partial` updates (re-INVITE / UPDATE).
//!
//! Owns: the XML → model mapping, the merge rules, and the stream → sending participant lookup used to name
//! channels. Pure; the XML text itself is sealed into the manifest by the runtime, not here.
//!
//! Dialects accepted (siprec.md §1.4): namespaces `urn:ietf:params:xml:ns:recording:1` (RFC),
//! `urn:ietf:params:xml:ns:recording` (pre-RFC: Oracle, Ribbon, Metaswitch, AudioCodes),
//! `urn:ietf:params:xml:ns:siprec` (BroadWorks, root `recording_metadata`) and no namespace; element names
//! compared case-insensitively (`datamode`/`dataMode`); id attributes `session_id|id`, `participant_id|id`,
//! `stream_id|id`, `group_id|id` and `session_id|session`; participants named by `nameID aor=` or `<aor>`;
//! `send`/`recv` as text or `<id>` children; associations as separate `*assoc` elements or nested in
//! `participant` (a `session=` attribute, `send`/`recv` children) or, draft-style, `associate-time` inside
//! `session`. Foreign-namespace elements and draft-era `extensiondata` wrappers are kept verbatim per object;
//! a root-level `extensiondata parent="<id>"` is attached to the object with that id.
//!
//! Times are kept as the strings sent: SRC clocks are not trusted (a Ribbon capture carries 1970 dates).
//! Personal data (AoRs, display names, extension contents) is wrapped in [`Pii`], so `Debug` of any type
//! here never shows it.

use std::ops::Range;

use airlock_telemetry::Pii;
use roxmltree::{Document, Node, ParsingOptions};
use thiserror::Error;

/// Largest document accepted; larger is refused with [`MetadataError::TooLarge`] before parsing.
pub const MAX_METADATA_BYTES: usize = 256 * 1024;
/// Most XML nodes (elements, text, comments…) in one document; more → [`MetadataError::TooManyNodes`].
pub const MAX_XML_NODES: u32 = 20_000;
/// Deepest element nesting accepted; deeper → [`MetadataError::TooDeep`].
pub const MAX_XML_DEPTH: usize = 32;
/// Most objects of one kind (participants, streams, …) in a document and in the merged state of one
/// Recording Session; a document over it is refused with [`MetadataError::TooManyObjects`], an update that
/// would grow the state over it is refused with [`MetadataError::StateFull`] and leaves the state unchanged.
pub const MAX_OBJECTS_PER_KIND: usize = 256;

const RFC_NAMESPACE: &str = "urn:ietf:params:xml:ns:recording:1";
const PRE_RFC_NAMESPACE: &str = "urn:ietf:params:xml:ns:recording";
const BROADWORKS_NAMESPACE: &str = "urn:ietf:params:xml:ns:siprec";

/// Why a metadata document was refused, split by whose fault. See [`MetadataError::sip_status`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetadataError {
    // --- the peer sent something malformed (400) ---
    /// Not well-formed XML; the position is 1-based.
    #[error("malformed XML at line {line}, column {column}")]
    MalformedXml {
        /// 1-based line.
        line: u32,
        /// 1-based column.
        column: u32,
    },
    /// A DTD (`<!DOCTYPE …>` with declarations): refused to rule out entity expansion tricks.
    #[error("recording metadata must not contain a DTD")]
    DtdNotAllowed,
    /// The root element is not `recording`/`recording_metadata` in a recording namespace (or none).
    #[error("not a recording metadata document")]
    NotRecordingMetadata,
    /// `datamode` is neither `complete` nor `partial`.
    #[error("datamode is neither complete nor partial")]
    InvalidDataMode,
    // --- one of our limits was reached (413) ---
    /// Larger than [`MAX_METADATA_BYTES`].
    #[error("recording metadata larger than {MAX_METADATA_BYTES} bytes")]
    TooLarge,
    /// More than [`MAX_XML_NODES`] nodes.
    #[error("recording metadata has more than {MAX_XML_NODES} XML nodes")]
    TooManyNodes,
    /// Nested deeper than [`MAX_XML_DEPTH`].
    #[error("recording metadata nested deeper than {MAX_XML_DEPTH} elements")]
    TooDeep,
    /// More than [`MAX_OBJECTS_PER_KIND`] objects of one kind in the document.
    #[error("recording metadata has more than {MAX_OBJECTS_PER_KIND} objects of one kind")]
    TooManyObjects,
    /// Applying the update would hold more than [`MAX_OBJECTS_PER_KIND`] objects of one kind.
    #[error("recording metadata state would exceed {MAX_OBJECTS_PER_KIND} objects of one kind")]
    StateFull,
}

impl MetadataError {
    /// 400 for malformed documents, 413 when one of our limits was reached.
    pub fn sip_status(&self) -> u16 {
        match self {
            MetadataError::MalformedXml { .. }
            | MetadataError::DtdNotAllowed
            | MetadataError::NotRecordingMetadata
            | MetadataError::InvalidDataMode => 400,
            MetadataError::TooLarge
            | MetadataError::TooManyNodes
            | MetadataError::TooDeep
            | MetadataError::TooManyObjects
            | MetadataError::StateFull => 413,
        }
    }

    /// A short reason phrase for the SIP status line.
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            MetadataError::MalformedXml { .. } => "Malformed Recording Metadata",
            MetadataError::DtdNotAllowed => "DTD Not Allowed In Recording Metadata",
            MetadataError::NotRecordingMetadata => "Not Recording Metadata",
            MetadataError::InvalidDataMode => "Invalid Recording Metadata Datamode",
            MetadataError::TooLarge => "Recording Metadata Too Large",
            MetadataError::TooManyNodes | MetadataError::TooDeep => "Recording Metadata Too Complex",
            MetadataError::TooManyObjects | MetadataError::StateFull => "Too Many Recording Metadata Objects",
        }
    }
}

/// Which namespace the document used (recorded for diagnostics and the manifest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetadataNamespace {
    /// `urn:ietf:params:xml:ns:recording:1` (RFC 7865).
    #[default]
    Rfc7865,
    /// `urn:ietf:params:xml:ns:recording` (draft era).
    PreRfc,
    /// `urn:ietf:params:xml:ns:siprec` (BroadWorks / Webex Calling).
    BroadWorks,
    /// No namespace at all.
    None,
}

/// `complete` (a full snapshot: replaces the state) or `partial` (changes since the last snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DataMode {
    /// A full snapshot (also assumed when the document has no `datamode`).
    #[default]
    Complete,
    /// Only added or changed objects.
    Partial,
}

/// A foreign-namespace element (or a draft-era `extensiondata` wrapper) kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The element's namespace URI, if any.
    pub namespace: Option<String>,
    /// The element's local name.
    pub name: String,
    /// The element's XML text exactly as received (vendor data often carries numbers and URIs).
    pub xml: Pii<String>,
    /// Every element of it (itself and its descendants) that holds text: (local name, trimmed text), in
    /// document order — what retention rules match on without parsing `xml` again.
    pub values: Vec<(String, Pii<String>)>,
}

/// A Communication Session Group (`<group>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// `group_id` (or `id`).
    pub id: String,
    /// `associate-time` as sent.
    pub associate_time: Option<String>,
    /// `disassociate-time` as sent.
    pub disassociate_time: Option<String>,
    /// Extension elements.
    pub extensions: Vec<Extension>,
}

/// A Communication Session (`<session>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// `session_id` (or `id`). Not unique across calls at some SRCs: never key artefacts on it.
    pub id: String,
    /// `sipSessionID` values (RFC 7989 Session-ID, possibly with `;remote=`).
    pub sip_session_ids: Vec<String>,
    /// `group-ref`.
    pub group_ref: Option<String>,
    /// `start-time` as sent.
    pub start_time: Option<String>,
    /// `stop-time` as sent.
    pub stop_time: Option<String>,
    /// Extension elements.
    pub extensions: Vec<Extension>,
}

/// When a Communication Session joined / left this Recording Session (`<sessionrecordingassoc>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRecordingAssoc {
    /// The session's id.
    pub session_id: String,
    /// `associate-time` as sent.
    pub associate_time: Option<String>,
    /// `disassociate-time` as sent: the session left.
    pub disassociate_time: Option<String>,
}

/// One name of a participant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameId {
    /// Address of record (`nameID aor=` or `<aor>`), e.g. a SIP or tel URI.
    pub aor: Option<Pii<String>>,
    /// Display name (`<name>`).
    pub name: Option<Pii<String>>,
}

/// A party (`<participant>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Participant {
    /// `participant_id` (or `id`).
    pub id: String,
    /// Its names (usually one).
    pub name_ids: Vec<NameId>,
    /// Extension elements.
    pub extensions: Vec<Extension>,
}

/// A participant joined / left a Communication Session (`<participantsessionassoc>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParticipantSessionAssoc {
    /// The participant's id.
    pub participant_id: String,
    /// The session's id.
    pub session_id: String,
    /// `associate-time` as sent.
    pub associate_time: Option<String>,
    /// `disassociate-time` as sent: the participant left (transfer, conference drop).
    pub disassociate_time: Option<String>,
}

/// A media stream of the Recording Session (`<stream>`), bound to an SDP m-line by its label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// `stream_id` (or `id`). May be empty (Avaya's first INVITE).
    pub id: String,
    /// `session_id` (or `session`).
    pub session_id: Option<String>,
    /// `<label>`: equals the SDP `a=label` of the m-line carrying it.
    pub label: Option<String>,
    /// A non-RFC `media_label` attribute some SRCs put on `<stream>` (then `<label>` is a free-form name).
    pub media_label: Option<String>,
    /// Extension elements.
    pub extensions: Vec<Extension>,
}

/// Which streams a participant sends and receives (`<participantstreamassoc>`, or `send`/`recv` nested in
/// `<participant>`). A participant on hold is expressed by `send` omitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParticipantStreamAssoc {
    /// The participant's id.
    pub participant_id: String,
    /// Stream ids it sends.
    pub send: Vec<String>,
    /// Stream ids it receives.
    pub recv: Vec<String>,
    /// `associate-time` as sent.
    pub associate_time: Option<String>,
    /// `disassociate-time` as sent.
    pub disassociate_time: Option<String>,
}

/// The metadata of one Recording Session: either one parsed document ([`parse`]) or the state merged from
/// several ([`RecordingMetadata::apply`]). Lists keep document order; ids are unique per kind after a merge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingMetadata {
    /// Namespace of the (last applied) document.
    pub namespace: MetadataNamespace,
    /// `complete` or `partial` (of the last applied document).
    pub data_mode: DataMode,
    /// `<group>` objects.
    pub groups: Vec<Group>,
    /// `<session>` objects.
    pub sessions: Vec<Session>,
    /// `<sessionrecordingassoc>` objects.
    pub session_recording_assocs: Vec<SessionRecordingAssoc>,
    /// `<participant>` objects.
    pub participants: Vec<Participant>,
    /// `<participantsessionassoc>` objects.
    pub participant_session_assocs: Vec<ParticipantSessionAssoc>,
    /// `<stream>` objects.
    pub streams: Vec<Stream>,
    /// `<participantstreamassoc>` objects.
    pub participant_stream_assocs: Vec<ParticipantStreamAssoc>,
    /// Extension elements directly under the root that no object claims.
    pub extensions: Vec<Extension>,
}

/// Parses one rs-metadata document. The result's [`RecordingMetadata::data_mode`] says whether it is a full
/// snapshot or a partial update; feed it to [`RecordingMetadata::apply`] on the session's state.
pub fn parse(xml: &str) -> Result<RecordingMetadata, MetadataError> {
    if xml.len() > MAX_METADATA_BYTES {
        return Err(MetadataError::TooLarge);
    }
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_XML_NODES,
        ..ParsingOptions::default()
    };
    let document = Document::parse_with_options(xml, options).map_err(|error| match error {
        roxmltree::Error::DtdDetected => MetadataError::DtdNotAllowed,
        roxmltree::Error::NodesLimitReached => MetadataError::TooManyNodes,
        other => {
            let position = other.pos();
            MetadataError::MalformedXml {
                line: position.row,
                column: position.col,
            }
        }
    })?;
    check_depth(&document)?;
    let root = document.root_element();
    let namespace = match root.tag_name().namespace() {
        None => MetadataNamespace::None,
        Some(RFC_NAMESPACE) => MetadataNamespace::Rfc7865,
        Some(PRE_RFC_NAMESPACE) => MetadataNamespace::PreRfc,
        Some(BROADWORKS_NAMESPACE) => MetadataNamespace::BroadWorks,
        Some(_) => return Err(MetadataError::NotRecordingMetadata),
    };
    if !["recording", "recording_metadata"]
        .iter()
        .any(|name| is_named(root, name))
    {
        return Err(MetadataError::NotRecordingMetadata);
    }
    let mut metadata = RecordingMetadata {
        namespace,
        ..RecordingMetadata::default()
    };
    let mut parented_extensions = Vec::new();
    for child in elements(root) {
        metadata.add_root_child(xml, child, &mut parented_extensions)?;
    }
    for (parent, extension) in parented_extensions {
        metadata.attach_extension(&parent, extension);
    }
    if metadata.largest_kind() > MAX_OBJECTS_PER_KIND {
        return Err(MetadataError::TooManyObjects);
    }
    Ok(metadata)
}

fn check_depth(document: &Document<'_>) -> Result<(), MetadataError> {
    // `ancestors` includes the node itself and the document root; bounded so this stays O(nodes).
    let too_deep = document
        .descendants()
        .filter(Node::is_element)
        .any(|element| element.ancestors().take(MAX_XML_DEPTH + 2).count() > MAX_XML_DEPTH + 1);
    if too_deep {
        Err(MetadataError::TooDeep)
    } else {
        Ok(())
    }
}

fn elements<'a, 'input>(node: Node<'a, 'input>) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children().filter(Node::is_element)
}

/// True for elements in a recording namespace or in none; everything else is an extension.
fn is_recording_element(node: Node<'_, '_>) -> bool {
    matches!(
        node.tag_name().namespace(),
        None | Some(RFC_NAMESPACE | PRE_RFC_NAMESPACE | BROADWORKS_NAMESPACE)
    )
}

fn is_named(node: Node<'_, '_>, name: &str) -> bool {
    is_recording_element(node) && node.tag_name().name().eq_ignore_ascii_case(name)
}

fn is_extension(node: Node<'_, '_>) -> bool {
    !is_recording_element(node) || is_named(node, "extensiondata")
}

fn attribute(node: Node<'_, '_>, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| node.attribute(*name))
        .map(|value| value.trim().to_owned())
}

fn child_text(node: Node<'_, '_>, name: &str) -> Option<String> {
    elements(node).find(|child| is_named(*child, name)).map(text_of)
}

fn text_of(node: Node<'_, '_>) -> String {
    node.text().unwrap_or_default().trim().to_owned()
}

/// Stream ids in `send`/`recv`: the element's own text, or its `<id>` children (BroadWorks).
fn stream_ids(node: Node<'_, '_>, name: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for list in elements(node).filter(|child| is_named(*child, name)) {
        let nested: Vec<String> = elements(list)
            .filter(|child| is_named(*child, "id"))
            .map(text_of)
            .collect();
        if nested.is_empty() {
            ids.extend(Some(text_of(list)).filter(|id| !id.is_empty()));
        } else {
            ids.extend(nested.into_iter().filter(|id| !id.is_empty()));
        }
    }
    ids
}

fn extension(xml: &str, node: Node<'_, '_>) -> Extension {
    let range: Range<usize> = node.range();
    Extension {
        namespace: node.tag_name().namespace().map(str::to_owned),
        name: node.tag_name().name().to_owned(),
        xml: Pii::new(xml.get(range).unwrap_or_default().to_owned()),
        values: node
            .descendants()
            .filter(Node::is_element)
            .filter_map(|element| {
                let text = text_of(element);
                (!text.is_empty()).then(|| (element.tag_name().name().to_owned(), Pii::new(text)))
            })
            .take(MAX_OBJECTS_PER_KIND)
            .collect(),
    }
}

fn extensions(xml: &str, node: Node<'_, '_>) -> Vec<Extension> {
    elements(node)
        .filter(|child| is_extension(*child))
        .map(|child| extension(xml, child))
        .collect()
}

impl RecordingMetadata {
    fn add_root_child(
        &mut self,
        xml: &str,
        child: Node<'_, '_>,
        parented_extensions: &mut Vec<(String, Extension)>,
    ) -> Result<(), MetadataError> {
        if is_extension(child) {
            match child.attribute("parent") {
                Some(parent) => parented_extensions.push((parent.trim().to_owned(), extension(xml, child))),
                None => self.extensions.push(extension(xml, child)),
            }
            return Ok(());
        }
        let times = |node| {
            (
                child_text(node, "associate-time"),
                child_text(node, "disassociate-time"),
            )
        };
        let name = child.tag_name().name().to_ascii_lowercase();
        match name.as_str() {
            "datamode" => {
                self.data_mode = match text_of(child).to_ascii_lowercase().as_str() {
                    "complete" => DataMode::Complete,
                    "partial" => DataMode::Partial,
                    _ => return Err(MetadataError::InvalidDataMode),
                };
            }
            "group" => {
                let (associate_time, disassociate_time) = times(child);
                self.groups.push(Group {
                    id: attribute(child, &["group_id", "id"]).unwrap_or_default(),
                    associate_time,
                    disassociate_time,
                    extensions: extensions(xml, child),
                });
            }
            "session" => {
                let id = attribute(child, &["session_id", "id"]).unwrap_or_default();
                let (associate_time, disassociate_time) = times(child);
                if associate_time.is_some() || disassociate_time.is_some() {
                    self.session_recording_assocs.push(SessionRecordingAssoc {
                        session_id: id.clone(),
                        associate_time,
                        disassociate_time,
                    });
                }
                self.sessions.push(Session {
                    id,
                    sip_session_ids: elements(child)
                        .filter(|node| is_named(*node, "sipSessionID"))
                        .map(text_of)
                        .collect(),
                    group_ref: child_text(child, "group-ref"),
                    start_time: child_text(child, "start-time"),
                    stop_time: child_text(child, "stop-time"),
                    extensions: extensions(xml, child),
                });
            }
            "sessionrecordingassoc" => {
                let (associate_time, disassociate_time) = times(child);
                self.session_recording_assocs.push(SessionRecordingAssoc {
                    session_id: attribute(child, &["session_id", "session", "id"]).unwrap_or_default(),
                    associate_time,
                    disassociate_time,
                });
            }
            "participant" => self.add_participant(xml, child),
            "participantsessionassoc" => {
                let (associate_time, disassociate_time) = times(child);
                self.participant_session_assocs.push(ParticipantSessionAssoc {
                    participant_id: attribute(child, &["participant_id", "participant"]).unwrap_or_default(),
                    session_id: attribute(child, &["session_id", "session"]).unwrap_or_default(),
                    associate_time,
                    disassociate_time,
                });
            }
            "stream" => self.streams.push(Stream {
                id: attribute(child, &["stream_id", "id"]).unwrap_or_default(),
                session_id: attribute(child, &["session_id", "session"]),
                label: child_text(child, "label"),
                media_label: attribute(child, &["media_label"]),
                extensions: extensions(xml, child),
            }),
            "participantstreamassoc" => {
                let (associate_time, disassociate_time) = times(child);
                self.participant_stream_assocs.push(ParticipantStreamAssoc {
                    participant_id: attribute(child, &["participant_id", "participant", "id"])
                        .unwrap_or_default(),
                    send: stream_ids(child, "send"),
                    recv: stream_ids(child, "recv"),
                    associate_time,
                    disassociate_time,
                });
            }
            // Anything else in a recording namespace (BroadWorks `<recording>`, Oracle `<mode>` …) carries
            // nothing the SRS uses; the whole document is sealed into the manifest anyway.
            _ => {}
        }
        Ok(())
    }

    /// A `<participant>`, with the draft-era nested forms turned into association objects.
    fn add_participant(&mut self, xml: &str, node: Node<'_, '_>) {
        let id = attribute(node, &["participant_id", "id"]).unwrap_or_default();
        let mut name_ids: Vec<NameId> = elements(node)
            .filter(|child| is_named(*child, "nameID"))
            .map(|name_id| NameId {
                aor: attribute(name_id, &["aor"]).map(Pii::new),
                name: child_text(name_id, "name").map(Pii::new),
            })
            .collect();
        let bare_aor = child_text(node, "aor");
        let bare_name = child_text(node, "name");
        if bare_aor.is_some() || bare_name.is_some() {
            name_ids.push(NameId {
                aor: bare_aor.map(Pii::new),
                name: bare_name.map(Pii::new),
            });
        }
        let associate_time = child_text(node, "associate-time");
        let disassociate_time = child_text(node, "disassociate-time");
        if let Some(session_id) = attribute(node, &["session_id", "session"]) {
            self.participant_session_assocs.push(ParticipantSessionAssoc {
                participant_id: id.clone(),
                session_id,
                associate_time: associate_time.clone(),
                disassociate_time: disassociate_time.clone(),
            });
        }
        let (send, recv) = (stream_ids(node, "send"), stream_ids(node, "recv"));
        if !send.is_empty() || !recv.is_empty() {
            self.participant_stream_assocs.push(ParticipantStreamAssoc {
                participant_id: id.clone(),
                send,
                recv,
                associate_time,
                disassociate_time,
            });
        }
        self.participants.push(Participant {
            id,
            name_ids,
            extensions: extensions(xml, node),
        });
    }

    /// Puts a root-level `extensiondata parent="<id>"` on the object with that id, else keeps it at the root.
    fn attach_extension(&mut self, parent: &str, extension: Extension) {
        let owner = if let Some(participant) = self.participants.iter_mut().find(|p| p.id == parent) {
            &mut participant.extensions
        } else if let Some(stream) = self.streams.iter_mut().find(|s| s.id == parent) {
            &mut stream.extensions
        } else if let Some(session) = self.sessions.iter_mut().find(|s| s.id == parent) {
            &mut session.extensions
        } else if let Some(group) = self.groups.iter_mut().find(|g| g.id == parent) {
            &mut group.extensions
        } else {
            &mut self.extensions
        };
        owner.push(extension);
    }

    fn largest_kind(&self) -> usize {
        [
            self.groups.len(),
            self.sessions.len(),
            self.session_recording_assocs.len(),
            self.participants.len(),
            self.participant_session_assocs.len(),
            self.streams.len(),
            self.participant_stream_assocs.len(),
            self.extensions.len(),
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    /// Applies a parsed document to this state. A `complete` document replaces the state. A `partial` one
    /// merges by id (associations by their participant/session ids): known objects are updated, new ones
    /// appended. Within an updated object, times and single values the update carries replace the old ones;
    /// `send`/`recv` lists of a stream association are replaced as a whole (an omitted `send` means the
    /// participant stopped sending, e.g. hold); other lists are replaced only when the update has entries.
    /// Leaving is a `disassociate-time`, never an omission, so nothing is ever removed by a partial update.
    /// Fails with [`MetadataError::StateFull`], leaving the state unchanged, when a kind would exceed
    /// [`MAX_OBJECTS_PER_KIND`].
    pub fn apply(&mut self, update: RecordingMetadata) -> Result<(), MetadataError> {
        if update.data_mode == DataMode::Complete {
            *self = update;
            return Ok(());
        }
        let would_overflow = grows_past_limit(&self.groups, &update.groups)
            || grows_past_limit(&self.sessions, &update.sessions)
            || grows_past_limit(&self.session_recording_assocs, &update.session_recording_assocs)
            || grows_past_limit(&self.participants, &update.participants)
            || grows_past_limit(
                &self.participant_session_assocs,
                &update.participant_session_assocs,
            )
            || grows_past_limit(&self.streams, &update.streams)
            || grows_past_limit(&self.participant_stream_assocs, &update.participant_stream_assocs)
            || self.extensions.len() + update.extensions.len() > MAX_OBJECTS_PER_KIND;
        if would_overflow {
            return Err(MetadataError::StateFull);
        }
        self.namespace = update.namespace;
        self.data_mode = DataMode::Partial;
        merge(&mut self.groups, update.groups);
        merge(&mut self.sessions, update.sessions);
        merge(
            &mut self.session_recording_assocs,
            update.session_recording_assocs,
        );
        merge(&mut self.participants, update.participants);
        merge(
            &mut self.participant_session_assocs,
            update.participant_session_assocs,
        );
        merge(&mut self.streams, update.streams);
        merge(
            &mut self.participant_stream_assocs,
            update.participant_stream_assocs,
        );
        self.extensions.extend(update.extensions);
        Ok(())
    }

    /// The participants currently sending on the stream whose `<label>` (or non-RFC `media_label`) equals
    /// `label` — the SDP `a=label` of an m-line — for naming that recording channel. Usually one; several for
    /// a mixed stream; none when the metadata does not say. Associations with a `disassociate-time`, and
    /// participants whose every session association has one, are left out (after a transfer the new agent
    /// sends on the old stream).
    pub fn stream_participants(&self, label: &str) -> Vec<&Participant> {
        let stream_ids: Vec<&str> = self
            .streams
            .iter()
            .filter(|stream| {
                stream.label.as_deref() == Some(label) || stream.media_label.as_deref() == Some(label)
            })
            .map(|stream| stream.id.as_str())
            .filter(|id| !id.is_empty())
            .collect();
        let mut senders: Vec<&Participant> = Vec::new();
        for association in &self.participant_stream_assocs {
            let sends_here = association
                .send
                .iter()
                .any(|id| stream_ids.contains(&id.as_str()));
            if !sends_here
                || association.disassociate_time.is_some()
                || self.has_left(&association.participant_id)
            {
                continue;
            }
            let participant = self
                .participants
                .iter()
                .find(|p| p.id == association.participant_id);
            if let Some(participant) = participant
                && !senders.iter().any(|known| known.id == participant.id)
            {
                senders.push(participant);
            }
        }
        senders
    }

    /// Every extension of the document (at the root and on groups, sessions, participants and streams), for
    /// matching on their [`Extension::values`].
    pub fn all_extensions(&self) -> impl Iterator<Item = &Extension> {
        self.extensions
            .iter()
            .chain(self.groups.iter().flat_map(|group| &group.extensions))
            .chain(self.sessions.iter().flat_map(|session| &session.extensions))
            .chain(
                self.participants
                    .iter()
                    .flat_map(|participant| &participant.extensions),
            )
            .chain(self.streams.iter().flat_map(|stream| &stream.extensions))
    }

    /// True when the participant has session associations and all of them carry a `disassociate-time`.
    fn has_left(&self, participant_id: &str) -> bool {
        let mut associations = self
            .participant_session_assocs
            .iter()
            .filter(|a| a.participant_id == participant_id)
            .peekable();
        associations.peek().is_some() && associations.all(|a| a.disassociate_time.is_some())
    }
}

/// An object of the model that a partial update merges by key.
trait Merge {
    /// What identifies the object across documents.
    fn same_object(&self, other: &Self) -> bool;
    /// Takes in a newer version of the same object.
    fn update_from(&mut self, newer: Self);
}

fn grows_past_limit<T: Merge>(existing: &[T], updates: &[T]) -> bool {
    let new_objects = updates
        .iter()
        .filter(|update| !existing.iter().any(|known| known.same_object(update)));
    existing.len() + new_objects.count() > MAX_OBJECTS_PER_KIND
}

fn merge<T: Merge>(existing: &mut Vec<T>, updates: Vec<T>) {
    for update in updates {
        match existing.iter_mut().find(|known| known.same_object(&update)) {
            Some(known) => known.update_from(update),
            None => existing.push(update),
        }
    }
}

fn replace_if_some<T>(target: &mut Option<T>, newer: Option<T>) {
    if newer.is_some() {
        *target = newer;
    }
}

fn replace_if_not_empty<T>(target: &mut Vec<T>, newer: Vec<T>) {
    if !newer.is_empty() {
        *target = newer;
    }
}

impl Merge for Group {
    fn same_object(&self, other: &Self) -> bool {
        self.id == other.id
    }
    fn update_from(&mut self, newer: Self) {
        replace_if_some(&mut self.associate_time, newer.associate_time);
        replace_if_some(&mut self.disassociate_time, newer.disassociate_time);
        replace_if_not_empty(&mut self.extensions, newer.extensions);
    }
}

impl Merge for Session {
    fn same_object(&self, other: &Self) -> bool {
        self.id == other.id
    }
    fn update_from(&mut self, newer: Self) {
        replace_if_not_empty(&mut self.sip_session_ids, newer.sip_session_ids);
        replace_if_some(&mut self.group_ref, newer.group_ref);
        replace_if_some(&mut self.start_time, newer.start_time);
        replace_if_some(&mut self.stop_time, newer.stop_time);
        replace_if_not_empty(&mut self.extensions, newer.extensions);
    }
}

impl Merge for SessionRecordingAssoc {
    fn same_object(&self, other: &Self) -> bool {
        self.session_id == other.session_id
    }
    fn update_from(&mut self, newer: Self) {
        replace_if_some(&mut self.associate_time, newer.associate_time);
        replace_if_some(&mut self.disassociate_time, newer.disassociate_time);
    }
}

impl Merge for Participant {
    fn same_object(&self, other: &Self) -> bool {
        self.id == other.id
    }
    fn update_from(&mut self, newer: Self) {
        replace_if_not_empty(&mut self.name_ids, newer.name_ids);
        replace_if_not_empty(&mut self.extensions, newer.extensions);
    }
}

impl Merge for ParticipantSessionAssoc {
    fn same_object(&self, other: &Self) -> bool {
        self.participant_id == other.participant_id && self.session_id == other.session_id
    }
    fn update_from(&mut self, newer: Self) {
        replace_if_some(&mut self.associate_time, newer.associate_time);
        replace_if_some(&mut self.disassociate_time, newer.disassociate_time);
    }
}

impl Merge for Stream {
    fn same_object(&self, other: &Self) -> bool {
        self.id == other.id
    }
    fn update_from(&mut self, newer: Self) {
        replace_if_some(&mut self.session_id, newer.session_id);
        replace_if_some(&mut self.label, newer.label);
        replace_if_some(&mut self.media_label, newer.media_label);
        replace_if_not_empty(&mut self.extensions, newer.extensions);
    }
}

impl Merge for ParticipantStreamAssoc {
    fn same_object(&self, other: &Self) -> bool {
        self.participant_id == other.participant_id
    }
    fn update_from(&mut self, newer: Self) {
        self.send = newer.send;
        self.recv = newer.recv;
        replace_if_some(&mut self.associate_time, newer.associate_time);
        replace_if_some(&mut self.disassociate_time, newer.disassociate_time);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7865 namespace, two parties, two streams, contact-centre extensions (shaped like siprec.md §1.3,
    /// ids and values invented for this test).
    const RFC_COMPLETE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <group group_id="grp-A1">
    <associate-time>2031-02-03T04:05:06Z</associate-time>
    <q:skill xmlns:q="urn:test:queue">sales</q:skill>
  </group>
  <session session_id="sess-A1">
    <sipSessionID>ab12cd34;remote=ef56ab78</sipSessionID>
    <group-ref>grp-A1</group-ref>
    <start-time>2031-02-03T04:05:06Z</start-time>
  </session>
  <sessionrecordingassoc session_id="sess-A1">
    <associate-time>2031-02-03T04:05:06Z</associate-time>
  </sessionrecordingassoc>
  <participant participant_id="p-caller">
    <nameID aor="sip:+15550001111@pstn.test">
      <name xml:lang="en">Caller Person</name>
    </nameID>
  </participant>
  <participant participant_id="p-agent">
    <nameID aor="sip:agent7@cc.test"><name>Agent Seven</name></nameID>
    <q:agent xmlns:q="urn:test:queue">7</q:agent>
  </participant>
  <participantsessionassoc participant_id="p-caller" session_id="sess-A1">
    <associate-time>2031-02-03T04:05:06Z</associate-time>
  </participantsessionassoc>
  <participantsessionassoc participant_id="p-agent" session_id="sess-A1">
    <associate-time>2031-02-03T04:05:09Z</associate-time>
  </participantsessionassoc>
  <stream stream_id="st-1" session_id="sess-A1"><label>1</label></stream>
  <stream stream_id="st-2" session_id="sess-A1"><label>2</label></stream>
  <participantstreamassoc participant_id="p-caller">
    <send>st-1</send><recv>st-2</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="p-agent">
    <send>st-2</send><recv>st-1</recv>
  </participantstreamassoc>
</recording>"#;

    /// Blind transfer from agent 7 to agent 9 on the same stream.
    const RFC_PARTIAL_TRANSFER: &str = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>partial</datamode>
  <participantsessionassoc participant_id="p-agent" session_id="sess-A1">
    <disassociate-time>2031-02-03T04:09:00Z</disassociate-time>
  </participantsessionassoc>
  <participant participant_id="p-agent9">
    <nameID aor="sip:agent9@cc.test"/>
  </participant>
  <participantsessionassoc participant_id="p-agent9" session_id="sess-A1">
    <associate-time>2031-02-03T04:09:01Z</associate-time>
  </participantsessionassoc>
  <participantstreamassoc participant_id="p-agent9">
    <send>st-2</send><recv>st-1</recv>
  </participantstreamassoc>
</recording>"#;

    /// Pre-RFC namespace, `id=`/`session=` attributes, send/recv nested in participant, vendor
    /// `extensiondata` with a prefixed namespace, a large label (Oracle-style, values invented).
    const PRE_RFC_NESTED: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<recording xmlns='urn:ietf:params:xml:ns:recording'>
 <datamode>complete</datamode>
 <session id="U2Vzc2lvbk9uZQ==">
  <associate-time>2030-01-01T00:00:00</associate-time>
  <extensiondata xmlns:vx="http://vendor.test/siprec"><vx:ucid>00FA0801</vx:ucid></extensiondata>
 </session>
 <participant id="UGFydHlPbmU=" session="U2Vzc2lvbk9uZQ==">
  <nameID aor="sip:1001@192.0.2.20"><name>Party One</name></nameID>
  <send>U3RyZWFtT25l</send>
  <recv>U3RyZWFtVHdv</recv>
  <associate-time>2030-01-01T00:00:00</associate-time>
 </participant>
 <participant id="UGFydHlUd28=" session="U2Vzc2lvbk9uZQ==">
  <nameID aor="sip:2002@192.0.2.30"/>
  <send>U3RyZWFtVHdv</send>
 </participant>
 <stream id="U3RyZWFtT25l" session="U2Vzc2lvbk9uZQ=="><label>16777301</label><mode>separate</mode></stream>
 <stream id="U3RyZWFtVHdv" session="U2Vzc2lvbk9uZQ=="><label>16777302</label><mode>separate</mode></stream>
</recording>"#;

    /// BroadWorks-style: siprec namespace, `recording_metadata` root, `dataMode`, `<aor>`, `<send><id>`,
    /// root-level `extensiondata parent=` with a vendor namespace (values invented).
    const BROADWORKS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">
  <dataMode>complete</dataMode>
  <recording><requestor>SRC</requestor><type>selective</type></recording>
  <group id="g-77"><associate-time>2029-05-05T10:00:00Z</associate-time></group>
  <session id="s-77"><group-ref>g-77</group-ref><associate-time>2029-05-05T10:00:00Z</associate-time></session>
  <participant id="bw-user" session="s-77">
    <aor>tel:+15557770000</aor>
    <name>Desk Phone</name>
    <send><id>bw-stream-a</id></send>
    <recv><id>bw-stream-b</id></recv>
  </participant>
  <participant id="bw-remote" session="s-77">
    <aor>sip:+15558880000@gw.test</aor>
    <send><id>bw-stream-b</id></send>
    <recv><id>bw-stream-a</id></recv>
  </participant>
  <stream id="bw-stream-a" session="s-77"><label>1</label><mode>separate</mode></stream>
  <stream id="bw-stream-b" session="s-77"><label>2</label><mode>separate</mode></stream>
  <extensiondata parent="bw-user">
    <bwRec xmlns="http://vendor.test/callRecording"><trackingId>777:1</trackingId></bwRec>
  </extensiondata>
</recording_metadata>"#;

    /// Avaya-style: RFC namespace with `dataMode`, a placeholder participant and an empty stream id in the
    /// INVITE; the real participant and stream arrive in a partial UPDATE (values invented).
    const AVAYA_INITIAL: &str = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <dataMode>complete</dataMode>
  <session session_id="0A1B2C3D4E5F"><sipSessionID>99aa</sipSessionID></session>
  <participant participant_id="placeholder"><nameID aor="sip:placeholder@sbc.test"/></participant>
  <stream stream_id="st-10" session_id="0A1B2C3D4E5F"><label>10</label></stream>
  <stream stream_id="" session_id="0A1B2C3D4E5F"><label>20</label></stream>
  <participantstreamassoc participant_id="placeholder"><send>st-10</send></participantstreamassoc>
</recording>"#;

    const AVAYA_UPDATE: &str = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <dataMode>partial</dataMode>
  <participant participant_id="placeholder"><nameID aor="sip:+15553334444@carrier.test"/></participant>
  <participant participant_id="agent-20"><nameID aor="sip:4020@pbx.test"><name>Agent 4020</name></nameID></participant>
  <stream stream_id="st-20" session_id="0A1B2C3D4E5F"><label>20</label></stream>
  <participantstreamassoc participant_id="agent-20"><send>st-20</send><recv>st-10</recv></participantstreamassoc>
</recording>"#;

    const NO_NAMESPACE: &str = r#"<recording>
  <datamode>complete</datamode>
  <session session_id="nn-s"/>
  <participant participant_id="nn-p"><nameID aor="sip:nn@test"/></participant>
  <stream stream_id="nn-st" session_id="nn-s"><label>0</label></stream>
  <participantstreamassoc participant_id="nn-p"><send>nn-st</send></participantstreamassoc>
</recording>"#;

    fn aor(participant: &Participant) -> &str {
        participant.name_ids[0].aor.as_ref().unwrap().expose()
    }

    fn sender_aors(metadata: &RecordingMetadata, label: &str) -> Vec<String> {
        metadata
            .stream_participants(label)
            .into_iter()
            .map(|p| aor(p).to_owned())
            .collect()
    }

    #[test]
    fn rfc_document_parses_into_the_model() {
        let metadata = parse(RFC_COMPLETE).unwrap();
        assert_eq!(metadata.namespace, MetadataNamespace::Rfc7865);
        assert_eq!(metadata.data_mode, DataMode::Complete);
        assert_eq!(metadata.groups[0].id, "grp-A1");
        assert_eq!(metadata.groups[0].extensions[0].name, "skill");
        assert_eq!(
            metadata.groups[0].extensions[0].namespace.as_deref(),
            Some("urn:test:queue")
        );
        assert_eq!(
            metadata.groups[0].extensions[0].xml.expose(),
            r#"<q:skill xmlns:q="urn:test:queue">sales</q:skill>"#
        );
        let values: Vec<(&str, &str)> = metadata
            .all_extensions()
            .flat_map(|extension| &extension.values)
            .map(|(name, text)| (name.as_str(), text.expose().as_str()))
            .collect();
        assert!(values.contains(&("skill", "sales")), "{values:?}");
        assert_eq!(metadata.sessions[0].sip_session_ids, ["ab12cd34;remote=ef56ab78"]);
        assert_eq!(metadata.sessions[0].group_ref.as_deref(), Some("grp-A1"));
        assert_eq!(metadata.session_recording_assocs.len(), 1);
        assert_eq!(metadata.participants.len(), 2);
        assert_eq!(
            metadata.participants[0].name_ids[0]
                .name
                .as_ref()
                .unwrap()
                .expose(),
            "Caller Person"
        );
        assert_eq!(metadata.participants[1].extensions.len(), 1);
        assert_eq!(metadata.participant_session_assocs.len(), 2);
        assert_eq!(metadata.streams[1].label.as_deref(), Some("2"));
        assert_eq!(sender_aors(&metadata, "1"), ["sip:+15550001111@pstn.test"]);
        assert_eq!(sender_aors(&metadata, "2"), ["sip:agent7@cc.test"]);
        assert!(metadata.stream_participants("3").is_empty());
    }

    #[test]
    fn partial_update_transfers_a_stream_to_a_new_participant() {
        let mut state = parse(RFC_COMPLETE).unwrap();
        let update = parse(RFC_PARTIAL_TRANSFER).unwrap();
        assert_eq!(update.data_mode, DataMode::Partial);
        state.apply(update).unwrap();
        assert_eq!(state.participants.len(), 3);
        assert_eq!(state.participant_session_assocs.len(), 3);
        let leaving = state
            .participant_session_assocs
            .iter()
            .find(|a| a.participant_id == "p-agent")
            .unwrap();
        assert_eq!(leaving.associate_time.as_deref(), Some("2031-02-03T04:05:09Z"));
        assert_eq!(leaving.disassociate_time.as_deref(), Some("2031-02-03T04:09:00Z"));
        assert_eq!(sender_aors(&state, "2"), ["sip:agent9@cc.test"]);
        assert_eq!(sender_aors(&state, "1"), ["sip:+15550001111@pstn.test"]);
        // The group extension survives a partial update that does not mention the group.
        assert_eq!(state.groups[0].extensions.len(), 1);

        // A later complete snapshot replaces everything.
        state.apply(parse(NO_NAMESPACE).unwrap()).unwrap();
        assert_eq!(state.participants.len(), 1);
        assert_eq!(state.namespace, MetadataNamespace::None);
    }

    #[test]
    fn hold_by_omitting_send_and_leaving_by_disassociate_time() {
        let mut state = parse(RFC_COMPLETE).unwrap();
        let hold = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode>
            <participantstreamassoc participant_id="p-caller"><recv>st-2</recv></participantstreamassoc>
            </recording>"#;
        state.apply(parse(hold).unwrap()).unwrap();
        assert!(sender_aors(&state, "1").is_empty());
        let resume = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode>
            <participantstreamassoc participant_id="p-caller"><send>st-1</send></participantstreamassoc>
            </recording>"#;
        state.apply(parse(resume).unwrap()).unwrap();
        assert_eq!(sender_aors(&state, "1"), ["sip:+15550001111@pstn.test"]);
        let leave = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode>
            <participantstreamassoc participant_id="p-caller">
              <send>st-1</send><disassociate-time>2031-02-03T05:00:00Z</disassociate-time>
            </participantstreamassoc></recording>"#;
        state.apply(parse(leave).unwrap()).unwrap();
        assert!(sender_aors(&state, "1").is_empty());
    }

    #[test]
    fn pre_rfc_nested_associations() {
        let metadata = parse(PRE_RFC_NESTED).unwrap();
        assert_eq!(metadata.namespace, MetadataNamespace::PreRfc);
        assert_eq!(metadata.sessions[0].id, "U2Vzc2lvbk9uZQ==");
        assert_eq!(metadata.sessions[0].extensions[0].name, "extensiondata");
        assert!(
            metadata.sessions[0].extensions[0]
                .xml
                .expose()
                .contains("<vx:ucid>00FA0801</vx:ucid>")
        );
        // Inside a draft-era wrapper, the vendor elements are found by their local name.
        let values = &metadata.sessions[0].extensions[0].values;
        assert_eq!(values.len(), 1);
        assert_eq!(
            (values[0].0.as_str(), values[0].1.expose().as_str()),
            ("ucid", "00FA0801")
        );
        assert_eq!(
            metadata.session_recording_assocs[0].associate_time.as_deref(),
            Some("2030-01-01T00:00:00")
        );
        assert_eq!(metadata.participant_session_assocs.len(), 2);
        assert_eq!(metadata.participant_stream_assocs.len(), 2);
        assert_eq!(metadata.participant_stream_assocs[0].recv, ["U3RyZWFtVHdv"]);
        assert_eq!(
            metadata.streams[0].session_id.as_deref(),
            Some("U2Vzc2lvbk9uZQ==")
        );
        assert_eq!(sender_aors(&metadata, "16777301"), ["sip:1001@192.0.2.20"]);
        assert_eq!(sender_aors(&metadata, "16777302"), ["sip:2002@192.0.2.30"]);
    }

    #[test]
    fn broadworks_dialect() {
        let metadata = parse(BROADWORKS).unwrap();
        assert_eq!(metadata.namespace, MetadataNamespace::BroadWorks);
        assert_eq!(metadata.groups[0].id, "g-77");
        assert_eq!(
            metadata.participants[0].name_ids[0]
                .name
                .as_ref()
                .unwrap()
                .expose(),
            "Desk Phone"
        );
        assert_eq!(sender_aors(&metadata, "1"), ["tel:+15557770000"]);
        assert_eq!(sender_aors(&metadata, "2"), ["sip:+15558880000@gw.test"]);
        let attached = &metadata.participants[0].extensions;
        assert_eq!(attached.len(), 1);
        assert!(
            attached[0]
                .xml
                .expose()
                .contains("<trackingId>777:1</trackingId>")
        );
        assert!(metadata.extensions.is_empty());
    }

    #[test]
    fn avaya_placeholder_then_partial_update() {
        let mut state = parse(AVAYA_INITIAL).unwrap();
        assert_eq!(sender_aors(&state, "10"), ["sip:placeholder@sbc.test"]);
        assert!(state.stream_participants("20").is_empty());
        state.apply(parse(AVAYA_UPDATE).unwrap()).unwrap();
        assert_eq!(sender_aors(&state, "10"), ["sip:+15553334444@carrier.test"]);
        assert_eq!(sender_aors(&state, "20"), ["sip:4020@pbx.test"]);
        assert_eq!(state.streams.len(), 3);
    }

    #[test]
    fn no_namespace_and_media_label() {
        let metadata = parse(NO_NAMESPACE).unwrap();
        assert_eq!(metadata.namespace, MetadataNamespace::None);
        assert_eq!(sender_aors(&metadata, "0"), ["sip:nn@test"]);
        let media_label = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1">
            <stream stream_id="s" media_label="1"><label>Caller_Stream</label></stream>
            <participant participant_id="p"><nameID aor="sip:p@test"/></participant>
            <participantstreamassoc participant_id="p"><send>s</send></participantstreamassoc></recording>"#;
        let metadata = parse(media_label).unwrap();
        assert_eq!(metadata.data_mode, DataMode::Complete);
        assert_eq!(sender_aors(&metadata, "1"), ["sip:p@test"]);
        assert_eq!(sender_aors(&metadata, "Caller_Stream"), ["sip:p@test"]);
    }

    #[test]
    fn refusals_name_the_problem() {
        assert!(matches!(
            parse("<recording>"),
            Err(MetadataError::MalformedXml { .. })
        ));
        assert_eq!(
            parse("<recording>\n<a></b>"),
            Err(MetadataError::MalformedXml { line: 2, column: 4 })
        );
        assert_eq!(parse("<html/>"), Err(MetadataError::NotRecordingMetadata));
        assert_eq!(
            parse(r#"<recording xmlns="urn:other"/>"#),
            Err(MetadataError::NotRecordingMetadata)
        );
        assert_eq!(
            parse("<recording><datamode>sometimes</datamode></recording>"),
            Err(MetadataError::InvalidDataMode)
        );
        let dtd = r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><recording>&a;</recording>"#;
        assert_eq!(parse(dtd), Err(MetadataError::DtdNotAllowed));
        let deep = format!(
            "<recording>{}{}</recording>",
            "<x>".repeat(MAX_XML_DEPTH),
            "</x>".repeat(MAX_XML_DEPTH)
        );
        assert_eq!(parse(&deep), Err(MetadataError::TooDeep));
        let many = format!("<recording>{}</recording>", "<a/>".repeat(MAX_XML_NODES as usize));
        assert_eq!(parse(&many), Err(MetadataError::TooManyNodes));
        let streams = format!(
            "<recording>{}</recording>",
            "<stream/>".repeat(MAX_OBJECTS_PER_KIND + 1)
        );
        assert_eq!(parse(&streams), Err(MetadataError::TooManyObjects));
        let huge = format!("<recording>{}</recording>", " ".repeat(MAX_METADATA_BYTES));
        assert_eq!(parse(&huge), Err(MetadataError::TooLarge));
        assert_eq!(MetadataError::TooLarge.sip_status(), 413);
        assert_eq!(MetadataError::DtdNotAllowed.sip_status(), 400);
    }

    #[test]
    fn state_growth_is_capped_and_refused_updates_change_nothing() {
        let mut state = RecordingMetadata::default();
        for batch in 0..(MAX_OBJECTS_PER_KIND / 64) {
            let participants: String = (0..64)
                .map(|index| format!(r#"<participant participant_id="p{batch}-{index}"/>"#))
                .collect();
            let update = format!("<recording><datamode>partial</datamode>{participants}</recording>");
            state.apply(parse(&update).unwrap()).unwrap();
        }
        assert_eq!(state.participants.len(), MAX_OBJECTS_PER_KIND);
        let before = state.clone();
        let one_more =
            r#"<recording><datamode>partial</datamode><participant participant_id="new"/></recording>"#;
        assert_eq!(
            state.apply(parse(one_more).unwrap()),
            Err(MetadataError::StateFull)
        );
        assert_eq!(state, before);
        let known =
            r#"<recording><datamode>partial</datamode><participant participant_id="p0-0"/></recording>"#;
        assert_eq!(state.apply(parse(known).unwrap()), Ok(()));
    }

    #[test]
    fn debug_never_shows_personal_data() {
        for fixture in [RFC_COMPLETE, PRE_RFC_NESTED, BROADWORKS, AVAYA_UPDATE] {
            let printed = format!("{:?}", parse(fixture).unwrap());
            for secret in [
                "sip:",
                "tel:",
                "Agent",
                "Party One",
                "Desk Phone",
                "777:1",
                "00FA0801",
            ] {
                assert!(!printed.contains(secret), "{secret} leaked: {printed}");
            }
        }
    }

    #[test]
    fn truncations_and_byte_flips_never_panic() {
        for fixture in [
            RFC_COMPLETE,
            RFC_PARTIAL_TRANSFER,
            PRE_RFC_NESTED,
            BROADWORKS,
            AVAYA_INITIAL,
            NO_NAMESPACE,
        ] {
            let mut state = parse(RFC_COMPLETE).unwrap();
            for end in (0..=fixture.len()).filter(|&end| fixture.is_char_boundary(end)) {
                if let Ok(document) = parse(&fixture[..end]) {
                    let _ = state.apply(document);
                    let _ = state.stream_participants("1");
                }
            }
            let mut bytes = fixture.as_bytes().to_vec();
            for index in (0..bytes.len()).step_by(3) {
                let original = bytes[index];
                for replacement in [b'<', b'>', b'"', b'/', b'&'] {
                    bytes[index] = replacement;
                    if let Ok(document) = std::str::from_utf8(&bytes).map(parse) {
                        let _ = document.map(|document| state.apply(document));
                    }
                }
                bytes[index] = original;
            }
        }
    }
}
