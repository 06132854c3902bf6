// Progressive enhancement: tells this node the browser's time zone (an IANA name such as
// Europe/London) in a cookie, so that pages show times in it. Nothing else is sent; without
// this script, times show in the zone chosen in the profile settings, or in UTC.
(function () {
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && /^[A-Za-z0-9_+\-\/]{1,64}$/.test(zone)) {
      document.cookie = "tz=" + zone + "; path=/; max-age=31536000; samesite=lax" +
        (location.protocol === "https:" ? "; secure" : "");
    }
  } catch (error) {
    // An old browser without Intl: times stay in UTC.
  }
})();
