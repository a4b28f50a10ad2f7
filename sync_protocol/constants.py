"""Protocol constants: XML namespaces, multipart part names and file names.

A flat module of constants only (other modules, e.g. the OpenRosa rendering, add theirs here).
Values are the ones Collect and Central really use (openrosa.md, vectors/README.md).
"""

from __future__ import annotations

# ------------------------------------------------------------------ XML namespaces
#: the namespace Collect writes on the manifest of an encrypted submission
ENCRYPTED_NS = "http://www.opendatakit.org/xforms/encrypted"
#: the namespace of Aggregate/Briefcase storage copies of submissions (older manifests)
SUBMISSIONS_NS = "http://opendatakit.org/submissions"
#: OpenRosa's namespace (``orx:meta``, ``orx:instanceID`` in manifests)
OPENROSA_XFORMS_NS = "http://openrosa.org/xforms"
#: ODK Entities (``entities:entity`` in a submission's meta block)
ENTITIES_NS = "http://www.opendatakit.org/xforms/entities"

# ------------------------------------------------------------------ multipart upload
#: the part that carries the instance XML, or the manifest of an encrypted submission
XML_SUBMISSION_PART = "xml_submission_file"

# ------------------------------------------------------------------ file names
#: every encrypted file's name is its plaintext name plus this suffix
ENC_SUFFIX = ".enc"
#: the plaintext instance inside an encrypted submission (also the name in the signature)
SUBMISSION_XML = "submission.xml"
#: the encrypted instance; always decrypted last (IV index = number of media files)
ENCRYPTED_XML_FILE = "submission.xml.enc"
#: Central recognises the client audit log purely by this encrypted name
ENCRYPTED_AUDIT_FILE = "audit.csv.enc"

# ------------------------------------------------------------------ key sizes
#: RSA key sizes Collect and this project accept (Central decrypts 2048 only)
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 4096
