"""NBD protocol constants and wire structures, named as in the NBD spec (``doc/proto.md``).

Every multi-byte field on the wire is big-endian ("network byte order"). One ``struct.Struct``
per message layout, so each header is parsed or built with a single call.
"""

from __future__ import annotations

import struct

# -- magics ------------------------------------------------------------------------------
NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT"
NBD_REP_MAGIC = 0x3E889045565A9  # option reply magic
NBD_REQUEST_MAGIC = 0x25609513
NBD_SIMPLE_REPLY_MAGIC = 0x67446698
NBD_STRUCTURED_REPLY_MAGIC = 0x668E33EF

# -- handshake flags (server, 16 bits) and client flags (32 bits) --------------------------
NBD_FLAG_FIXED_NEWSTYLE = 1 << 0
NBD_FLAG_NO_ZEROES = 1 << 1
NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0
NBD_FLAG_C_NO_ZEROES = 1 << 1

# -- transmission flags (16 bits) ----------------------------------------------------------
NBD_FLAG_HAS_FLAGS = 1 << 0
NBD_FLAG_READ_ONLY = 1 << 1
NBD_FLAG_SEND_FLUSH = 1 << 2
NBD_FLAG_SEND_FUA = 1 << 3
NBD_FLAG_ROTATIONAL = 1 << 4
NBD_FLAG_SEND_TRIM = 1 << 5
NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6
NBD_FLAG_SEND_DF = 1 << 7
NBD_FLAG_CAN_MULTI_CONN = 1 << 8
NBD_FLAG_SEND_RESIZE = 1 << 9
NBD_FLAG_SEND_CACHE = 1 << 10
NBD_FLAG_SEND_FAST_ZERO = 1 << 11

# -- options ---------------------------------------------------------------------------------
NBD_OPT_EXPORT_NAME = 1
NBD_OPT_ABORT = 2
NBD_OPT_LIST = 3
NBD_OPT_PEEK_EXPORT = 4
NBD_OPT_STARTTLS = 5
NBD_OPT_INFO = 6
NBD_OPT_GO = 7
NBD_OPT_STRUCTURED_REPLY = 8
NBD_OPT_LIST_META_CONTEXT = 9
NBD_OPT_SET_META_CONTEXT = 10
NBD_OPT_EXTENDED_HEADERS = 11

# -- option replies --------------------------------------------------------------------------
NBD_REP_ACK = 1
NBD_REP_SERVER = 2
NBD_REP_INFO = 3
NBD_REP_META_CONTEXT = 4
NBD_REP_FLAG_ERROR = 1 << 31
NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR | 1
NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR | 2
NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR | 3
NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR | 4
NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR | 5
NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR | 6
NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR | 7
NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR | 8
NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR | 9

# -- NBD_REP_INFO types ------------------------------------------------------------------------
NBD_INFO_EXPORT = 0
NBD_INFO_NAME = 1
NBD_INFO_DESCRIPTION = 2
NBD_INFO_BLOCK_SIZE = 3

# -- commands ----------------------------------------------------------------------------------
NBD_CMD_READ = 0
NBD_CMD_WRITE = 1
NBD_CMD_DISC = 2
NBD_CMD_FLUSH = 3
NBD_CMD_TRIM = 4
NBD_CMD_CACHE = 5
NBD_CMD_WRITE_ZEROES = 6
NBD_CMD_BLOCK_STATUS = 7

CMD_NAMES = {
    NBD_CMD_READ: "READ",
    NBD_CMD_WRITE: "WRITE",
    NBD_CMD_DISC: "DISC",
    NBD_CMD_FLUSH: "FLUSH",
    NBD_CMD_TRIM: "TRIM",
    NBD_CMD_CACHE: "CACHE",
    NBD_CMD_WRITE_ZEROES: "WRITE_ZEROES",
    NBD_CMD_BLOCK_STATUS: "BLOCK_STATUS",
}

# -- command flags -----------------------------------------------------------------------------
NBD_CMD_FLAG_FUA = 1 << 0
NBD_CMD_FLAG_NO_HOLE = 1 << 1
NBD_CMD_FLAG_DF = 1 << 2
NBD_CMD_FLAG_REQ_ONE = 1 << 3
NBD_CMD_FLAG_FAST_ZERO = 1 << 4

# -- structured replies ----------------------------------------------------------------------
NBD_REPLY_FLAG_DONE = 1 << 0
NBD_REPLY_TYPE_NONE = 0
NBD_REPLY_TYPE_OFFSET_DATA = 1
NBD_REPLY_TYPE_OFFSET_HOLE = 2
NBD_REPLY_TYPE_BLOCK_STATUS = 5
NBD_REPLY_TYPE_ERROR = (1 << 15) | 1
NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) | 2

# -- base:allocation ---------------------------------------------------------------------------
NBD_STATE_HOLE = 1 << 0
NBD_STATE_ZERO = 1 << 1
BASE_ALLOCATION = "base:allocation"

# -- errors ------------------------------------------------------------------------------------
NBD_EPERM = 1
NBD_EIO = 5
NBD_ENOMEM = 12
NBD_EINVAL = 22
NBD_ENOSPC = 28
NBD_EOVERFLOW = 75
NBD_ENOTSUP = 95
NBD_ESHUTDOWN = 108
NBD_ERRORS = frozenset(
    {
        NBD_EPERM,
        NBD_EIO,
        NBD_ENOMEM,
        NBD_EINVAL,
        NBD_ENOSPC,
        NBD_EOVERFLOW,
        NBD_ENOTSUP,
        NBD_ESHUTDOWN,
    }
)

# -- limits ------------------------------------------------------------------------------------
MAX_STRING = 4096  # the spec's limit for names, descriptions and messages
MAX_OPTION_DATA = 65536  # option payloads larger than this are refused (DoS guard)
DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024  # 2^25: the spec's "SHOULD NOT be a DoS" bound
MAX_EXTENTS_PER_CHUNK = 1 << 20

# -- wire structures -----------------------------------------------------------------------------
# Server greeting: NBDMAGIC, IHAVEOPT, handshake flags.
GREETING = struct.Struct(">QQH")
CLIENT_FLAGS = struct.Struct(">I")
# Option request header: magic (IHAVEOPT), option, length.
OPTION_HEADER = struct.Struct(">QII")
# Option reply header: magic, option, reply type, length.
OPTION_REPLY = struct.Struct(">QIII")
# NBD_OPT_EXPORT_NAME reply: export size, transmission flags (+124 zero bytes unless NO_ZEROES).
EXPORT_NAME_REPLY = struct.Struct(">QH")
INFO_EXPORT = struct.Struct(">HQH")  # type, size, transmission flags
INFO_BLOCK_SIZE = struct.Struct(">HIII")  # type, minimum, preferred, maximum payload
# Request: magic, command flags, type, cookie, offset, length.
REQUEST = struct.Struct(">IHHQQI")
# Simple reply: magic, error, cookie.
SIMPLE_REPLY = struct.Struct(">IIQ")
# Structured reply chunk: magic, flags, type, cookie, length.
STRUCTURED_REPLY = struct.Struct(">IHHQI")
# A structured chunk header followed by an OFFSET_DATA offset (built in one call on reads).
OFFSET_DATA_HEADER = struct.Struct(">IHHQIQ")
OFFSET_HOLE = struct.Struct(">QI")  # offset, hole size
ERROR_CHUNK = struct.Struct(">IH")  # error, message length
BLOCK_DESCRIPTOR = struct.Struct(">II")  # extent length, status flags
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
